-- The catalog lives in its own database next to Dagster's (run by the postgres image on first start).
CREATE DATABASE watch_catalog OWNER dagster;
