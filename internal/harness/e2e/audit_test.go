package e2e

import (
	"testing"

	"github.com/weftnet/weft/internal/harness/k8stest"
)

// agentUser is the agents' service account as the audit log names it.
const agentUser = "system:serviceaccount:weft-system:weft-agent"

func agentEvents(t *testing.T) []k8stest.AuditEvent {
	t.Helper()
	evs, err := (&k8stest.ControlPlane{AuditLog: lab.AuditLog}).AuditEvents(agentUser)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}
