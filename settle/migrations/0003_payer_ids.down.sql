-- Drops the payers' ids: users must log in with the mini program again
-- before paying by jsapi.
DROP TABLE IF EXISTS payer_ids;
