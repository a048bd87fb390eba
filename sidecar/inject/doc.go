// Package inject adds the weft sidecar to pods: offline, to the pod templates
// of YAML manifests (InjectYAML, behind `weft inject -f`), and online, as a
// Kubernetes mutating admission webhook (Webhook, behind `weft inject serve`),
// with the TLS bootstrap that webhook needs (ServeTLS, GenerateCerts,
// PatchCABundle).
//
// # What is injected
//
// A native sidecar: the container `weft-sidecar` (`weft sidecar`) at the
// start of initContainers with restartPolicy Always, so it starts before the
// app and stops after it. It joins the mesh in userspace, forwards overlay
// traffic for the ports of the pod annotation `weft.dev/expose` to
// 127.0.0.1:<port>, and offers the app a SOCKS5 proxy (127.0.0.1:1080), an
// HTTP CONNECT proxy (127.0.0.1:3128) and the static forwards of
// `weft.dev/forward`. Those two annotations are not parsed here: the sidecar
// reads the pod's annotations at run time through a downward API volume
// (/etc/weft/podinfo/annotations), so changing them needs no re-injection.
// Every app container (containers, not initContainers) gets ALL_PROXY,
// HTTP_PROXY, HTTPS_PROXY and NO_PROXY pointing at the proxies, unless it sets
// the variable itself. Volumes weft-gossip (the gossip key Secret),
// weft-podinfo and weft-state are added unless the pod has a volume of that
// name. The pod (template) is marked with the annotation
// `weft.dev/injected: <version>`. A Secret volume can only name a Secret of
// the pod's own namespace, so every namespace with injected pods needs its
// copy of the gossip key Secret (Config.GossipSecret). Native sidecars need
// Kubernetes 1.29 or later (SidecarContainers, on by default since then).
//
// # Who is injected
//
// The webhook injects a pod when its namespace carries the label
// `weft.dev/inject=enabled` or the pod the annotation `weft.dev/inject: "true"`;
// the annotation `weft.dev/inject: "false"` opts a pod out even in a labelled
// namespace. A pod that carries `weft.dev/injected`, or already has a
// container or init container named weft-sidecar, is left alone, so
// injecting twice changes nothing (the webhook answers with no patch).
//
// Offline injection cannot see namespace labels: InjectYAML injects every
// supported workload (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet,
// Job, CronJob) unless its pod template carries `weft.dev/inject: "false"`.
// Other documents (Services, ConfigMaps, comments, ...) are copied through
// byte for byte, and so are workloads it leaves alone, so running it over
// its own output changes nothing. The annotation it writes into the pod
// template keeps the webhook from injecting the resulting pods again.
//
// # Registering the webhook
//
// AdmissionReview does not carry namespace labels, so the webhook looks them
// up through the NamespaceLabelsFunc given to NewWebhook (a Get on the
// namespace in `weft inject serve`; its service account needs get on
// namespaces). The MutatingWebhookConfiguration should send only pod
// CREATEs (rules: apiGroups [""], apiVersions [v1], resources [pods],
// operations [CREATE]) to path /inject, with admissionReviewVersions [v1],
// sideEffects None, and a namespaceSelector that leaves out kube-system and
// the namespace the injector itself runs in (weft-system), so the injector
// never waits on itself. The webhook never rejects: a pod it cannot mutate
// is allowed unchanged with a warning, a non-pod request is allowed. So
// failurePolicy only decides what happens while the injector is
// unreachable: Ignore starts pods without a sidecar, Fail holds them back
// until it is up.
package inject
