package k8stest

import (
	"context"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	agentSA    = "system:serviceaccount:weft-system:weft-agent"
	injectorSA = "system:serviceaccount:weft-system:weft-injector"
)

// install applies deploy/<dir> ("" for deploy/ itself) as an admin would.
func install(t *testing.T, cp *ControlPlane, dir string) {
	t.Helper()
	a, err := cp.NewApplier()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, o := range renderDeploy(t, dir) {
		if _, err := a.Apply(ctx, o, "weft-test", false); err != nil {
			t.Fatal(err)
		}
		if o.GetKind() == "Namespace" {
			cp.DefaultServiceAccount(t, o.GetName())
		}
	}
}

type access struct {
	verb, group, resource, namespace, name string
}

func (a access) String() string {
	s := a.verb + " " + a.resource
	if a.group != "" {
		s += "." + a.group
	}
	if a.name != "" {
		s += "/" + a.name
	}
	if a.namespace != "" {
		s += " in " + a.namespace
	} else {
		s += " cluster-wide"
	}
	return s
}

// TestRBACLeastPrivilege: SubjectAccessReviews of the
// agent's and the injector's service accounts, as installed by deploy/,
// show that each can do what it needs and nothing around it: no Secrets
// anywhere, no pod writes, no watch, no other webhook configuration.
func TestRBACLeastPrivilege(t *testing.T) {
	cp := Start(t)
	install(t, cp, "")

	const mwc = "admissionregistration.k8s.io"
	cases := []struct {
		user    string
		allowed []access
		denied  []access
	}{
		{
			user: agentSA,
			allowed: []access{
				{verb: "list", resource: "nodes"}, // kubejoin.Discover, once at start
			},
			denied: []access{
				{verb: "watch", resource: "nodes"},
				{verb: "get", resource: "nodes", name: "node-1"},
				{verb: "update", resource: "nodes", name: "node-1"},
				{verb: "patch", resource: "nodes", name: "node-1"},
				{verb: "get", resource: "secrets"},
				{verb: "list", resource: "secrets"},
				{verb: "watch", resource: "secrets"},
				{verb: "get", resource: "secrets", namespace: "weft-system", name: "weft-gossip"},
				{verb: "list", resource: "secrets", namespace: "kube-system"},
				{verb: "list", resource: "pods"},
				{verb: "create", resource: "pods", namespace: "default"},
				{verb: "update", resource: "pods", namespace: "default", name: "p"},
				{verb: "patch", resource: "pods", namespace: "default", name: "p"},
				{verb: "delete", resource: "pods", namespace: "default", name: "p"},
				{verb: "get", resource: "namespaces", name: "default"},
				{verb: "update", group: mwc, resource: "mutatingwebhookconfigurations", name: "weft-injector"},
			},
		},
		{
			user: injectorSA,
			allowed: []access{
				{verb: "get", resource: "namespaces", name: "apps"}, // the opt-in label
				{verb: "get", group: mwc, resource: "mutatingwebhookconfigurations", name: "weft-injector"},
				{verb: "update", group: mwc, resource: "mutatingwebhookconfigurations", name: "weft-injector"}, // caBundle
			},
			denied: []access{
				{verb: "list", resource: "namespaces"},
				{verb: "watch", resource: "namespaces"},
				{verb: "update", resource: "namespaces", name: "apps"},
				{verb: "list", group: mwc, resource: "mutatingwebhookconfigurations"},
				{verb: "create", group: mwc, resource: "mutatingwebhookconfigurations"},
				{verb: "delete", group: mwc, resource: "mutatingwebhookconfigurations", name: "weft-injector"},
				{verb: "update", group: mwc, resource: "mutatingwebhookconfigurations", name: "someone-elses"},
				{verb: "get", group: mwc, resource: "mutatingwebhookconfigurations", name: "someone-elses"},
				{verb: "update", group: mwc, resource: "validatingwebhookconfigurations", name: "weft-injector"},
				{verb: "get", resource: "secrets"},
				{verb: "list", resource: "secrets"},
				{verb: "get", resource: "secrets", namespace: "apps", name: "weft-gossip"},
				{verb: "create", resource: "pods", namespace: "apps"},
				{verb: "update", resource: "pods", namespace: "apps", name: "p"},
				{verb: "patch", resource: "pods", namespace: "apps", name: "p"},
				{verb: "list", resource: "nodes"},
			},
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	review := func(user string, a access) *authorizationv1.SubjectAccessReviewStatus {
		t.Helper()
		sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user,
			// What the apiserver gives every service account token.
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:weft-system", "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: a.verb, Group: a.group, Resource: a.resource, Namespace: a.namespace, Name: a.name,
			},
		}}
		got, err := cp.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("SubjectAccessReview %s %s: %v", user, a, err)
		}
		return &got.Status
	}
	for _, c := range cases {
		for _, a := range c.allowed {
			if st := review(c.user, a); !st.Allowed {
				t.Errorf("%s cannot %s, which it needs (%s)", c.user, a, st.Reason)
			}
		}
		for _, a := range c.denied {
			if st := review(c.user, a); st.Allowed {
				t.Errorf("%s may %s (%s): more than it needs", c.user, a, st.Reason)
			}
		}
	}

	// The same through real requests with the service accounts' tokens.
	agent := cp.ClientFor(t, cp.ServiceAccountToken(t, "weft-system", "weft-agent"))
	if _, err := agent.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("agent token: list nodes: %v", err)
	}
	if _, err := agent.CoreV1().Secrets("weft-system").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("agent token: list secrets in weft-system: got %v, want forbidden", err)
	}
	injector := cp.ClientFor(t, cp.ServiceAccountToken(t, "weft-system", "weft-injector"))
	if _, err := injector.CoreV1().Namespaces().Get(ctx, "weft-system", metav1.GetOptions{}); err != nil {
		t.Errorf("injector token: get namespace: %v", err)
	}
	if _, err := injector.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "weft-injector", metav1.GetOptions{}); err != nil {
		t.Errorf("injector token: get its webhook configuration: %v", err)
	}
	if _, err := injector.CoreV1().Secrets("").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("injector token: list secrets: got %v, want forbidden", err)
	}
}
