-- stored_at is when the sink wrote the order's final version (confirmed or
-- rejected), by Postgres's clock: the "stored" step of the order's journey
-- (GET /v1/orders/{id}?trace=1). NULL while the row is pending, and for rows
-- made final before this column existed.
ALTER TABLE orders ADD COLUMN stored_at timestamptz;

---- create above / drop below ----

ALTER TABLE orders DROP COLUMN stored_at;
