-- Input that cannot be analysed is unknown, never something milder.

-- expect: unknown
DELET FROM payments

-- expect: unknown
SELECT FROM WHERE

-- expect: unknown
SELECT 1; DELET FROM payments

-- expect: unknown
SELECT 'unterminated
