package inject

import (
	"errors"
	"fmt"
)

// The pod annotations and namespace label of the injection contract.
const (
	// AnnotationInject opts a pod in ("true") or out ("false").
	AnnotationInject = "weft.dev/inject"
	// AnnotationInjected marks an injected pod; its value is the injector's version.
	AnnotationInjected = "weft.dev/injected"
	// AnnotationExpose lists the ports the sidecar forwards from the mesh
	// to 127.0.0.1, e.g. "8080,53/udp". Read by the sidecar, not here.
	AnnotationExpose = "weft.dev/expose"
	// AnnotationForward lists static forwards into the mesh, e.g.
	// "5432=db.weft:5432". Read by the sidecar, not here.
	AnnotationForward = "weft.dev/forward"
	// LabelInject on a namespace, with the value LabelInjectEnabled, opts
	// all its pods in.
	LabelInject        = "weft.dev/inject"
	LabelInjectEnabled = "enabled"

	// SidecarName is the name of the injected init container.
	SidecarName = "weft-sidecar"
)

// Config is what the injector puts into a pod that is not fixed by the
// contract.
type Config struct {
	// Image of the sidecar container.
	Image string
	// Join is the gossip address the sidecar joins (WEFT_JOIN).
	Join string
	// GossipSecret names the Secret holding the gossip key.
	GossipSecret string
	// GossipSecretKey is the key in GossipSecret that holds the gossip key;
	// it is mounted as /etc/weft/gossip/key whatever its name.
	GossipSecretKey string
	// Version is the value of the weft.dev/injected annotation.
	Version string
}

// DefaultConfig returns the configuration of a standard install: the
// injector and the gossip service in weft-system.
func DefaultConfig() Config {
	return Config{
		Image:           "ghcr.io/weftnet/weft:latest",
		Join:            "weft-gossip.weft-system.svc:7946",
		GossipSecret:    "weft-gossip",
		GossipSecretKey: "gossip.key", // as `weft keygen --k8s-secret` writes it
		Version:         "dev",
	}
}

// Validate reports the first field that cannot go into a pod.
func (c Config) Validate() error {
	switch {
	case c.Image == "":
		return errors.New("inject: no sidecar image")
	case c.Join == "":
		return errors.New("inject: no join address")
	case c.GossipSecret == "":
		return errors.New("inject: no gossip key secret")
	case c.GossipSecretKey == "":
		return fmt.Errorf("inject: no key of secret %s holding the gossip key", c.GossipSecret)
	case c.Version == "":
		return errors.New("inject: no version for the " + AnnotationInjected + " annotation")
	}
	return nil
}
