// Package membership is the agent's gossip: a Serf member with an
// encrypted keyring (Start, Config) that announces this node's tags and
// keeps a view of every other member's (Members, Changed). Around Serf it
// keeps what weft needs of it: its own UDP/TCP transport, re-announcing tags
// memberlist dropped, reconnecting to failed members, the gossip keys and
// their rotation (GenerateGossipKey, LoadGossipKeys, SetKeyring), and the
// blocks held for failed members, told to newcomers in probe acks and in
// notices (TellFailed). What to do with the view is package plan's job.
package membership
