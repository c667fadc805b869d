-- 001: the procurement domain ("Gestão de Compras").
-- Every table keeps created_at/updated_at; ids are UUIDs (gen_random_uuid is core since PG 13).

CREATE TABLE IF NOT EXISTS departments (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name        TEXT NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS users (
    id            UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    email         TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN
                    ('requester', 'approver_a1', 'approver_a2', 'approver_a3', 'buyer', 'admin')),
    department_id UUID REFERENCES departments(id),
    is_active     BOOLEAN NOT NULL DEFAULT true,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS suppliers (
    id          UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name        TEXT NOT NULL,
    email       TEXT,
    tax_id      TEXT UNIQUE,
    is_active   BOOLEAN NOT NULL DEFAULT true,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Workflow: draft -> pending_a1 -> pending_a2 -> pending_a3 -> approved -> quoting -> ordered
-- -> delivered; rejected from any pending level; cancelled from anything before ordered.
CREATE TABLE IF NOT EXISTS purchase_requests (
    id            UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    title         TEXT NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description   TEXT NOT NULL DEFAULT '',
    requester_id  UUID NOT NULL REFERENCES users(id),
    department_id UUID NOT NULL REFERENCES departments(id),
    amount        NUMERIC(14, 2) NOT NULL CHECK (amount >= 0),
    currency      CHAR(3) NOT NULL DEFAULT 'BRL',
    items         JSONB NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(items) = 'array'),
    status        TEXT NOT NULL DEFAULT 'draft' CHECK (status IN
                    ('draft', 'pending_a1', 'pending_a2', 'pending_a3', 'approved', 'rejected',
                     'quoting', 'ordered', 'delivered', 'cancelled')),
    needed_by     DATE,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_purchase_requests_requester ON purchase_requests(requester_id);
CREATE INDEX IF NOT EXISTS idx_purchase_requests_department ON purchase_requests(department_id);

-- One row per decision: level 1..3, the approver, the verdict.
CREATE TABLE IF NOT EXISTS approvals (
    id                  UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    purchase_request_id UUID NOT NULL REFERENCES purchase_requests(id) ON DELETE CASCADE,
    level               SMALLINT NOT NULL CHECK (level BETWEEN 1 AND 3),
    approver_id         UUID NOT NULL REFERENCES users(id),
    verdict             TEXT NOT NULL CHECK (verdict IN ('approved', 'rejected')),
    comment             TEXT NOT NULL DEFAULT '',
    decided_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_approvals_request ON approvals(purchase_request_id, level);

CREATE TABLE IF NOT EXISTS quotations (
    id                  UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    purchase_request_id UUID NOT NULL REFERENCES purchase_requests(id) ON DELETE CASCADE,
    supplier_id         UUID NOT NULL REFERENCES suppliers(id),
    amount              NUMERIC(14, 2) NOT NULL CHECK (amount >= 0),
    currency            CHAR(3) NOT NULL DEFAULT 'BRL',
    delivery_days       INTEGER CHECK (delivery_days >= 0),
    status              TEXT NOT NULL DEFAULT 'active' CHECK (status IN
                          ('active', 'selected', 'declined', 'expired')),
    valid_until         DATE,
    notes               TEXT NOT NULL DEFAULT '',
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS purchase_orders (
    id                     UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    purchase_request_id    UUID NOT NULL REFERENCES purchase_requests(id),
    quotation_id           UUID REFERENCES quotations(id),
    supplier_id            UUID NOT NULL REFERENCES suppliers(id),
    buyer_id               UUID NOT NULL REFERENCES users(id),
    amount                 NUMERIC(14, 2) NOT NULL CHECK (amount >= 0),
    currency               CHAR(3) NOT NULL DEFAULT 'BRL',
    status                 TEXT NOT NULL DEFAULT 'issued' CHECK (status IN
                             ('issued', 'confirmed', 'cancelled', 'closed')),
    delivery_status        TEXT NOT NULL DEFAULT 'pending' CHECK (delivery_status IN
                             ('pending', 'in_transit', 'delivered', 'late')),
    expected_delivery_date DATE,
    delivered_at           TIMESTAMPTZ,
    created_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at             TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_purchase_orders_request ON purchase_orders(purchase_request_id);
CREATE INDEX IF NOT EXISTS idx_purchase_orders_delivery
    ON purchase_orders(expected_delivery_date) WHERE delivery_status IN ('pending', 'in_transit');

-- Application-level audit (who did what through Sinal's REST writes). Row-level history
-- of every domain table is change_log (002), written by triggers.
CREATE TABLE IF NOT EXISTS audit_logs (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name  TEXT NOT NULL,
    record_id   TEXT NOT NULL,
    action      TEXT NOT NULL,
    actor_id    UUID REFERENCES users(id),
    details     JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
