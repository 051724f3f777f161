-- Which row changes touch every row.

-- expect: write
DELETE FROM rentals WHERE id = 501

-- expect: destructive
DELETE FROM payments

-- expect: destructive
delete from payments where 1=1

-- expect: destructive
DELETE FROM payments WHERE TRUE

-- expect: destructive
DELETE FROM payments WHERE 'a' = 'a'

-- expect: destructive
DELETE FROM payments WHERE id = id

-- expect: destructive
DELETE FROM payments WHERE id = 3 OR 1 = 1

-- expect: write
DELETE FROM payments WHERE id = 3 AND 1 = 1

-- expect: destructive
DELETE FROM payments WHERE NOT false

-- expect: destructive
DELETE FROM payments WHERE 't'::boolean

-- expect: destructive
DELETE FROM payments WHERE now() > '2000-01-01'

-- expect: write
DELETE FROM payments WHERE 1 = 0

-- expect: destructive
UPDATE customers SET phone = NULL

-- expect: destructive
UPDATE customers SET phone = NULL WHERE 2 > 1

-- expect: write
UPDATE customers SET phone = NULL WHERE id = $1

-- expect: write
DELETE FROM rentals r USING customers c WHERE r.customer_id = c.id AND c.deleted

-- expect: write
INSERT INTO payments SELECT * FROM staged_payments
