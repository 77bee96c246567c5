-- Demo ERP (optional, NOT a migration): schema `erp` with users, sessions, products and orders, captured so
-- that ordinary ERP actions emit exactly the spec's event types. Real ERPs skip this file and call
-- whk.enable_capture on their own tables. Install (idempotent, after `whk db migrate`):
--     psql -v ON_ERROR_STOP=1 -d "$DSN" -f sql/demo/erp.sql
-- Uninstall:
--     SELECT whk.disable_capture(tbl) FROM whk.capture_config WHERE tbl::text LIKE 'erp.%';
--     DROP SCHEMA erp CASCADE;
--
-- ERP action                                              event type
-- INSERT / UPDATE (email, name, role, active) / DELETE users   user.created / user.updated / user.deleted
-- erp.login(...)  (INSERT INTO erp.user_sessions)             user.login
-- erp.logout(...) (ended_at set; or an open session deleted)  user.logout
-- INSERT orders                                               order.created
-- UPDATE orders, status -> cancelled | completed | shipped    order.cancelled | order.completed | order.shipped
-- any other UPDATE of orders                                  order.updated  (orders are cancelled, not deleted)
-- INSERT / UPDATE / DELETE products                           product.created / product.updated / product.deleted
-- UPDATE products, stock from > 0 to <= 0                     product.out_of_stock (besides product.updated)
-- SELECT whk.emit_system('startup' | 'shutdown' | 'health_check' | 'backup_completed', ...)   system.*
BEGIN;

CREATE SCHEMA IF NOT EXISTS erp;
COMMENT ON SCHEMA erp IS 'WHK demo ERP (sql/demo/erp.sql): not part of WHK, safe to drop.';

CREATE TABLE IF NOT EXISTS erp.users (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email      text        NOT NULL UNIQUE,
    name       text        NOT NULL,
    role       text        NOT NULL DEFAULT 'customer',
    active     boolean     NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS erp.user_sessions (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint      NOT NULL REFERENCES erp.users (id) ON DELETE CASCADE,
    started_at timestamptz NOT NULL DEFAULT now(),
    ended_at   timestamptz,
    end_reason text,
    ip         inet,
    user_agent text
);

CREATE TABLE IF NOT EXISTS erp.products (
    id         bigint        GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku        text          NOT NULL UNIQUE,
    name       text          NOT NULL,
    price      numeric(12,2) NOT NULL CHECK (price >= 0),
    stock      integer       NOT NULL DEFAULT 0,
    active     boolean       NOT NULL DEFAULT true,
    updated_at timestamptz   NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS erp.orders (
    id         bigint        GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint        NOT NULL REFERENCES erp.users (id),
    status     text          NOT NULL DEFAULT 'pending'
                             CHECK (status IN ('pending', 'paid', 'shipped', 'completed', 'cancelled')),
    total      numeric(12,2) NOT NULL DEFAULT 0 CHECK (total >= 0),
    currency   text          NOT NULL DEFAULT 'BRL',
    created_at timestamptz   NOT NULL DEFAULT now(),
    updated_at timestamptz   NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------- plain row capture (whk.enable_capture)
-- users: updated_at alone changing is not news; listen to the columns that mean something.
SELECT whk.enable_capture('erp.users', 'user', columns => ARRAY['email', 'name', 'role', 'active']);
SELECT whk.enable_capture('erp.products', 'product');
-- orders: a status change to cancelled/completed/shipped is emitted by erp.order_status_events instead of
-- order.updated; orders are never deleted (there is no order.deleted type).
SELECT whk.enable_capture(
    'erp.orders', 'order',
    condition => 'old.id IS NULL OR new.status IS NOT DISTINCT FROM old.status '
                 'OR new.status NOT IN (''cancelled'', ''completed'', ''shipped'')',
    operations => ARRAY['INSERT', 'UPDATE']);

-- ---------------------------------------------------------------- bindings for the specific types
-- Statement-level like the capture triggers; SECURITY DEFINER so ERP roles need no grant on schema whk.
-- The functions joining old and new rows turn nested loops off: PL/pgSQL caches one plan per session for
-- the transition tables it first saw, and a one-row plan (nested loop) reused for a large UPDATE rescans
-- the old rows for every new row (docs/capture.md, migration 0016). No JIT either: a cached plan compiles
-- at every execution.
-- Named whk_demo_* so they fire after whk_capture_* (same-event triggers fire in name order): a product's
-- product.updated is written before its product.out_of_stock.

CREATE OR REPLACE FUNCTION erp.order_status_events()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_nestloop = off
SET jit = off
AS $$
BEGIN
    PERFORM whk.emit('order.' || n.status,
                     whk.row_change('UPDATE', 'erp.orders', to_jsonb(n), to_jsonb(o)),
                     n.id::text)
       FROM erp_new AS n
       JOIN erp_old AS o ON o.id = n.id
      WHERE n.status IS DISTINCT FROM o.status
        AND n.status IN ('cancelled', 'completed', 'shipped')
      ORDER BY n.id;
    RETURN NULL;
END;
$$;
CREATE OR REPLACE TRIGGER whk_demo_order_status AFTER UPDATE ON erp.orders
    REFERENCING OLD TABLE AS erp_old NEW TABLE AS erp_new
    FOR EACH STATEMENT EXECUTE FUNCTION erp.order_status_events();

CREATE OR REPLACE FUNCTION erp.product_stock_events()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_nestloop = off
SET jit = off
AS $$
BEGIN
    PERFORM whk.emit('product.out_of_stock',
                     jsonb_build_object('product_id', n.id, 'sku', n.sku, 'name', n.name,
                                        'stock', n.stock, 'previous_stock', o.stock),
                     n.id::text)
       FROM erp_new AS n
       JOIN erp_old AS o ON o.id = n.id
      WHERE o.stock > 0 AND n.stock <= 0
      ORDER BY n.id;
    RETURN NULL;
END;
$$;
CREATE OR REPLACE TRIGGER whk_demo_product_stock AFTER UPDATE ON erp.products
    REFERENCING OLD TABLE AS erp_old NEW TABLE AS erp_new
    FOR EACH STATEMENT EXECUTE FUNCTION erp.product_stock_events();

CREATE OR REPLACE FUNCTION erp.session_events()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM whk.emit('user.login',
                         jsonb_build_object(
                             'user_id', n.user_id, 'session_id', n.id,
                             'at', to_char(n.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                             'ip', host(n.ip), 'user_agent', n.user_agent),
                         n.user_id::text)
           FROM erp_new AS n ORDER BY n.id;
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM whk.emit('user.logout',
                         jsonb_build_object(
                             'user_id', n.user_id, 'session_id', n.id,
                             'at', to_char(n.ended_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                             'reason', coalesce(n.end_reason, 'logout'),
                             'duration_s', round(greatest(extract(epoch FROM n.ended_at - n.started_at), 0)::numeric, 3)),
                         n.user_id::text)
           FROM erp_new AS n
           JOIN erp_old AS o ON o.id = n.id
          WHERE o.ended_at IS NULL AND n.ended_at IS NOT NULL
          ORDER BY n.id;
    ELSE
        -- An open session that disappears (user deleted, sessions purged) is a logout too.
        PERFORM whk.emit('user.logout',
                         jsonb_build_object(
                             'user_id', o.user_id, 'session_id', o.id,
                             'at', to_char(statement_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                             'reason', 'session_deleted',
                             'duration_s', round(greatest(extract(epoch FROM statement_timestamp() - o.started_at), 0)::numeric, 3)),
                         o.user_id::text)
           FROM erp_old AS o
          WHERE o.ended_at IS NULL
          ORDER BY o.id;
    END IF;
    RETURN NULL;
END;
$$;
CREATE OR REPLACE TRIGGER whk_demo_session_login AFTER INSERT ON erp.user_sessions
    REFERENCING NEW TABLE AS erp_new
    FOR EACH STATEMENT EXECUTE FUNCTION erp.session_events();
CREATE OR REPLACE TRIGGER whk_demo_session_logout AFTER UPDATE ON erp.user_sessions
    REFERENCING OLD TABLE AS erp_old NEW TABLE AS erp_new
    FOR EACH STATEMENT EXECUTE FUNCTION erp.session_events();
CREATE OR REPLACE TRIGGER whk_demo_session_deleted AFTER DELETE ON erp.user_sessions
    REFERENCING OLD TABLE AS erp_old
    FOR EACH STATEMENT EXECUTE FUNCTION erp.session_events();

-- ---------------------------------------------------------------- what the ERP application calls
CREATE OR REPLACE FUNCTION erp.login(p_user_id bigint, p_ip inet DEFAULT NULL, p_user_agent text DEFAULT NULL)
RETURNS bigint
LANGUAGE sql
AS $$
    INSERT INTO erp.user_sessions (user_id, ip, user_agent) VALUES (p_user_id, p_ip, p_user_agent) RETURNING id;
$$;

CREATE OR REPLACE FUNCTION erp.logout(p_session_id bigint, p_reason text DEFAULT 'logout')
RETURNS boolean
LANGUAGE sql
AS $$
    WITH ended AS (
        UPDATE erp.user_sessions SET ended_at = clock_timestamp(), end_reason = p_reason
         WHERE id = p_session_id AND ended_at IS NULL
        RETURNING id
    )
    SELECT EXISTS (SELECT 1 FROM ended);
$$;

COMMIT;
