-- adopts: legacy 3
-- value_bin as first written ran per row as a function call doing numeric arithmetic (~3 µs a row):
-- STRICT kept the planner from inlining it and 1.01 / 0.99 was numeric. The same bins, inlined,
-- in double precision (as assessor/stats.py computes them).
CREATE OR REPLACE FUNCTION value_bin(v double precision) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN abs(v) < 1e-300::double precision THEN 0
    ELSE sign(v)::integer * (10000 + least(9999, greatest(-9999,
        ceil(ln(abs(v)) / ln(1.01::double precision / 0.99::double precision))::integer)))
END;
