-- The tables the sink keeps in step with the Goka group tables. version is
-- the group-table version of the row: the sink only ever moves a row to a
-- higher one. status uses the API's words.
CREATE TABLE orders (
    order_id    uuid PRIMARY KEY,
    customer_id text NOT NULL,
    status      text NOT NULL CHECK (status IN ('pending', 'confirmed', 'rejected')),
    reason      text,
    total_cents bigint NOT NULL,
    currency    text NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    version     bigint NOT NULL CHECK (version > 0)
);

-- Order lines never change once submitted; they go with their order.
CREATE TABLE order_items (
    order_id         uuid NOT NULL REFERENCES orders (order_id) ON DELETE CASCADE,
    line_no          int NOT NULL,
    sku              text NOT NULL,
    quantity         int NOT NULL CHECK (quantity > 0),
    unit_price_cents bigint NOT NULL CHECK (unit_price_cents >= 0),
    PRIMARY KEY (order_id, line_no)
);

CREATE TABLE inventory (
    sku        text PRIMARY KEY,
    available  bigint NOT NULL CHECK (available >= 0),
    reserved   bigint NOT NULL CHECK (reserved >= 0),
    sold       bigint NOT NULL DEFAULT 0 CHECK (sold >= 0),
    updated_at timestamptz NOT NULL,
    version    bigint NOT NULL CHECK (version > 0)
);

-- Listing orders by status, a customer's orders by time, and the orders
-- holding a SKU.
CREATE INDEX orders_status_idx ON orders (status);
CREATE INDEX orders_customer_id_created_at_idx ON orders (customer_id, created_at);
CREATE INDEX order_items_sku_idx ON order_items (sku);

---- create above / drop below ----

DROP TABLE order_items;
DROP TABLE orders;
DROP TABLE inventory;
