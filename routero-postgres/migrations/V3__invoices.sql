-- Finalised monthly invoices: numbered and immutable.

CREATE SEQUENCE routero_invoice_number;

CREATE TABLE routero_invoices (
    workspace    TEXT        NOT NULL,
    month        DATE        NOT NULL,
    number       TEXT        NOT NULL UNIQUE,
    finalized_at TIMESTAMPTZ NOT NULL,
    body         TEXT        NOT NULL,
    PRIMARY KEY (workspace, month)
);

CREATE FUNCTION routero_invoices_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a finalised invoice is immutable';
END
$$;

CREATE TRIGGER routero_invoices_immutable
    BEFORE UPDATE OR DELETE ON routero_invoices
    FOR EACH ROW EXECUTE FUNCTION routero_invoices_immutable();
