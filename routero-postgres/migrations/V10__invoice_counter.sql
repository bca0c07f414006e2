-- Invoice numbers without gaps: a counter row taken in the finalising transaction
-- (a sequence hands out numbers that a rolled-back or crashed close never uses).
CREATE TABLE routero_invoice_counter (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    last     BIGINT  NOT NULL
);
INSERT INTO routero_invoice_counter (last)
SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM routero_invoice_number;
DROP SEQUENCE routero_invoice_number;
