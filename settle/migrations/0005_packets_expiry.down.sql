DROP INDEX IF EXISTS packets_expiry ON packets;
