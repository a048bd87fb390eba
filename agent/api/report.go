package api

import "time"

// Report is what the local API's GET /v1/status returns: the node, every
// member with its lease and, where it is a peer, the WireGuard counters.
type Report struct {
	Self          SelfReport       `json:"self"`
	Members       []MemberReport   `json:"members"`
	Conflicts     []ConflictReport `json:"conflicts"`
	Ready         bool             `json:"ready"`
	LastReconcile time.Time        `json:"last_reconcile"`
	LastError     string           `json:"last_error,omitempty"`
}

// SelfReport describes this node.
type SelfReport struct {
	Name            string `json:"name"`
	Mode            string `json:"mode"`
	Interface       string `json:"interface"`
	PublicKey       string `json:"public_key"`
	Fingerprint     string `json:"fingerprint"`
	Endpoint        string `json:"endpoint,omitempty"`
	Block           string `json:"block,omitempty"`
	Address         string `json:"address,omitempty"`
	MTU             int    `json:"mtu"`
	GossipEncrypted bool   `json:"gossip_encrypted"`
}

// MemberReport is one member as this node sees it.
type MemberReport struct {
	Name      string      `json:"name"`
	State     string      `json:"state"`
	Since     time.Time   `json:"since"`
	Mode      string      `json:"mode,omitempty"`
	Endpoint  string      `json:"endpoint,omitempty"`
	Block     string      `json:"block,omitempty"`
	OwnsBlock bool        `json:"owns_block"`
	PublicKey string      `json:"public_key,omitempty"`
	TagsError string      `json:"tags_error,omitempty"`
	Peer      *PeerReport `json:"peer,omitempty"`
}

// PeerReport is the WireGuard side of a member that is a peer.
type PeerReport struct {
	Endpoint      string    `json:"endpoint,omitempty"`
	LastHandshake time.Time `json:"last_handshake,omitzero"`
	RxBytes       int64     `json:"rx_bytes"`
	TxBytes       int64     `json:"tx_bytes"`
}

// ConflictReport is a lease conflict this node lost.
type ConflictReport struct {
	Block  string `json:"block"`
	Winner string `json:"winner"`
	Loser  string `json:"loser"`
}

// Lease is GET /v1/lease: what the CNI plugin needs to address pods.
type Lease struct {
	Block string `json:"block"`
	// NodeAddress is the node's own address in Block: the pods' gateway.
	NodeAddress string `json:"node_address"`
	MTU         int    `json:"mtu"`
	// Ready is false while the agent has no device, no lease, or is
	// re-leasing after a conflict.
	Ready  bool   `json:"ready"`
	Reason string `json:"reason,omitempty"`
}
