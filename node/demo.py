"""A small demo organisation: departments, one user per role (two requesters), suppliers.

Idempotent (keyed by names and e-mails). `sinal serve` seeds it in development mode when
the users table is empty; `sinal simulate` and `sinal token` rely on it.
"""

from __future__ import annotations

from typing import Any

import psycopg

DEPARTMENTS = ("Compras", "TI", "Operações")
USERS = (
    ("ana@sinal.dev", "Ana Souza", "requester", "TI"),
    ("bruno@sinal.dev", "Bruno Lima", "requester", "Operações"),
    ("carla@sinal.dev", "Carla Dias", "approver_a1", "TI"),
    ("diego@sinal.dev", "Diego Rocha", "approver_a2", "Operações"),
    ("elisa@sinal.dev", "Elisa Prado", "approver_a3", "Compras"),
    ("fabio@sinal.dev", "Fábio Nunes", "buyer", "Compras"),
    ("admin@sinal.dev", "Admin", "admin", "Compras"),
)
SUPPLIERS = ("Papelaria Central", "TechDistribuidora", "Móveis Paraná", "LimpaBem",
             "Rede Log Transportes")


def seed_demo(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    """Create the demo rows that are missing; return users by e-mail."""
    with conn.transaction():
        for name in DEPARTMENTS:
            conn.execute("INSERT INTO departments (name) VALUES (%s) ON CONFLICT DO NOTHING",
                         (name,))
        for email, name, role, dept in USERS:
            conn.execute(
                "INSERT INTO users (email, name, role, department_id) "
                "SELECT %s, %s, %s, id FROM departments WHERE name = %s "
                "ON CONFLICT (email) DO NOTHING", (email, name, role, dept),
            )
        for index, name in enumerate(SUPPLIERS):
            conn.execute(
                "INSERT INTO suppliers (name, email, tax_id) VALUES (%s, %s, %s) "
                "ON CONFLICT (tax_id) DO NOTHING",
                (name, f"vendas{index}@fornecedor.dev", f"00.000.000/000{index}-00"),
            )
    return demo_users(conn)


def demo_users(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    cur = conn.execute(
        "SELECT id::text, email, name, role, department_id::text FROM users ORDER BY email"
    )
    return {
        r[1]: {"id": r[0], "email": r[1], "name": r[2], "role": r[3], "department_id": r[4]}
        for r in cur.fetchall()
    }


def find_user(conn: psycopg.Connection[Any], who: str) -> dict[str, Any] | None:
    """A user by id, e-mail, or role (the first active user with that role)."""
    cur = conn.execute(
        "SELECT id::text, email, name, role, department_id::text FROM users "
        "WHERE id::text = %s OR email = %s OR role = %s ORDER BY (role = %s), email LIMIT 1",
        (who, who, who, who),
    )
    row = cur.fetchone()
    if row is None:
        return None
    return {"id": row[0], "email": row[1], "name": row[2], "role": row[3],
            "department_id": row[4]}
