// Package kubeapi is weft's Kubernetes API client: the four requests weft
// makes (list Nodes, get a Namespace, get and update a
// MutatingWebhookConfiguration) over plain net/http, decoded into the
// k8s.io/api types, with the apiserver found from a kubeconfig file or
// from the pod's service account (in-cluster).
//
// It replaces k8s.io/client-go in the weft binary. client-go's package
// inits (its scheme of every API group, its typed clients) cost every weft
// process about 11 MiB of resident memory before main runs, the agent
// included, for three calls made once at start or once per admitted pod.
// Nothing here watches, caches or retries: a caller that needs
// a retry (the caBundle update on a conflict) does it itself.
//
// What is supported of a kubeconfig: the current context's cluster (server,
// certificate-authority, certificate-authority-data, tls-server-name,
// insecure-skip-tls-verify) and user (token, tokenFile,
// client-certificate(-data) with client-key(-data)). Exec and
// auth-provider plugins and basic auth are refused with an error that
// says so, rather than sending unauthenticated requests.
package kubeapi
