package k8stest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
)

// AuditEvent is the part of an audit.k8s.io/v1 Event the tests look at.
type AuditEvent struct {
	Stage      string `json:"stage"`
	Verb       string `json:"verb"`
	RequestURI string `json:"requestURI"`
	UserAgent  string `json:"userAgent"`
	User       struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef *struct {
		Resource  string `json:"resource"`
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
}

func (e AuditEvent) String() string {
	code := 0
	if e.ResponseStatus != nil {
		code = e.ResponseStatus.Code
	}
	return fmt.Sprintf("%s %s %s (%d, %s)", e.User.Username, e.Verb, e.RequestURI, code, e.UserAgent)
}

// AuditEvents reads the audit log: every request of a service account
// whose response is complete, in order. The apiserver writes each event
// before it answers (--audit-log-mode=blocking).
func (cp *ControlPlane) AuditEvents(user string) ([]AuditEvent, error) {
	f, err := os.Open(cp.AuditLog)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []AuditEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		var e AuditEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("audit log %s: %w", cp.AuditLog, err)
		}
		if user == "" || e.User.Username == user {
			out = append(out, e)
		}
	}
	return out, sc.Err()
}
