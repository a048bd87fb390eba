package kubeapi

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ListNodes lists the Nodes that match the label selector ("" for all).
// It asks for any recent state (resourceVersion 0), which the apiserver
// answers from its watch cache instead of a quorum read of etcd, and for
// protobuf, which halves a large list.
func (c *Client) ListNodes(ctx context.Context, selector string) (*corev1.NodeList, error) {
	q := url.Values{"resourceVersion": {"0"}}
	if selector != "" {
		q.Set("labelSelector", selector)
	}
	var list corev1.NodeList
	r := request{method: http.MethodGet, path: "/api/v1/nodes", query: q, accept: mediaProtobuf + ", " + mediaJSON}
	if err := c.do(ctx, r, &list); err != nil {
		return nil, err
	}
	return &list, nil
}

// GetNamespace gets the Namespace name.
func (c *Client) GetNamespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	if err := checkName("namespace", name); err != nil {
		return nil, err
	}
	var ns corev1.Namespace
	if err := c.do(ctx, request{method: http.MethodGet, path: "/api/v1/namespaces/" + url.PathEscape(name)}, &ns); err != nil {
		return nil, err
	}
	return &ns, nil
}

const mutatingWebhookConfigurations = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/"

// GetMutatingWebhookConfiguration gets the MutatingWebhookConfiguration
// name.
func (c *Client) GetMutatingWebhookConfiguration(ctx context.Context, name string) (*admissionregistrationv1.MutatingWebhookConfiguration, error) {
	if err := checkName("MutatingWebhookConfiguration", name); err != nil {
		return nil, err
	}
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := c.do(ctx, request{method: http.MethodGet, path: mutatingWebhookConfigurations + url.PathEscape(name)}, &mwc); err != nil {
		return nil, err
	}
	return &mwc, nil
}

// UpdateMutatingWebhookConfiguration replaces the MutatingWebhookConfiguration
// of mwc's name with mwc (a PUT, RBAC verb update) and returns what was
// stored. mwc's resourceVersion makes it conditional: when another writer
// came first the error is ErrConflict. The apiserver records the change
// under the field manager of the client's UserAgent.
func (c *Client) UpdateMutatingWebhookConfiguration(ctx context.Context, mwc *admissionregistrationv1.MutatingWebhookConfiguration) (*admissionregistrationv1.MutatingWebhookConfiguration, error) {
	if err := checkName("MutatingWebhookConfiguration", mwc.Name); err != nil {
		return nil, err
	}
	obj := *mwc
	obj.TypeMeta = metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingWebhookConfiguration"}
	var out admissionregistrationv1.MutatingWebhookConfiguration
	r := request{method: http.MethodPut, path: mutatingWebhookConfigurations + url.PathEscape(mwc.Name), body: &obj}
	if err := c.do(ctx, r, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// checkName refuses names that would make another request's path: empty
// (a list) and the dot segments.
func checkName(kind, name string) error {
	if name == "" || name == "." || name == ".." {
		return fmt.Errorf("%s name %q: not a name", kind, name)
	}
	return nil
}
