-- Who a user is on a payment channel (a WeChat openid from the mini program
-- login, POST /v1/wechat/login), for the methods whose trade names the payer
-- (WeChat JSAPI) and the "your order is paid" subscribe message. A later
-- login replaces the row.
CREATE TABLE IF NOT EXISTS payer_ids (
	user_id    VARCHAR(64)  NOT NULL,
	channel    VARCHAR(8)   NOT NULL,
	payer_id   VARCHAR(128) NOT NULL,
	updated_at DATETIME(3)  NOT NULL,
	PRIMARY KEY (user_id, channel)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
