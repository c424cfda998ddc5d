-- Drops every table 0001 made, and with them all their rows.
DROP TABLE IF EXISTS node_leases;
DROP TABLE IF EXISTS payments;
DROP TABLE IF EXISTS packet_grabs;
DROP TABLE IF EXISTS packets;
DROP TABLE IF EXISTS orders;
DROP TABLE IF EXISTS sales;
DROP TABLE IF EXISTS ledger;
DROP TABLE IF EXISTS accounts;
