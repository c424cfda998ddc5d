// Package scripts holds the Lua scripts that decide grabs atomically inside
// Redis. Each script touches the keys of one partition only (one hash slot).
package scripts

import _ "embed"

// Sources of the scripts, embedded at build time.
var (
	//go:embed sale_create.lua
	SaleCreate string
	//go:embed sale_grab.lua
	SaleGrab string
	//go:embed sale_shard_create.lua
	SaleShardCreate string
	//go:embed sale_take.lua
	SaleTake string
	//go:embed sale_give.lua
	SaleGive string
	//go:embed order_release.lua
	OrderRelease string
	//go:embed packet_create.lua
	PacketCreate string
	//go:embed packet_grab.lua
	PacketGrab string
	//go:embed packet_expire.lua
	PacketExpire string
	//go:embed stream_ack.lua
	StreamAck string
	//go:embed sale_restore.lua
	SaleRestore string
	//go:embed packet_restore.lua
	PacketRestore string
)
