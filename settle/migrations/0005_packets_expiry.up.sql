-- The sweeper looks every second for live packets past their expiry whose
-- Redis keys are gone (settle/lost.go): without this index that query reads
-- every live packet.
CREATE INDEX IF NOT EXISTS packets_expiry ON packets (status, expires_at);
