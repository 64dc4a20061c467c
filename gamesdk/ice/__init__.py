"""NAT traversal, sans-IO: STUN (RFC 8489) on aioice's codec, the ICE agent (RFC 8445) and its TURN client."""
