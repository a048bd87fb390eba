package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/weftnet/weft/internal/kubeapi"
	"github.com/weftnet/weft/sidecar/inject"
)

func newInjectCmd(g *globalFlags) *cobra.Command {
	cfg := inject.DefaultConfig()
	cfg.Version = version
	var file string
	cmd := &cobra.Command{
		Use:   "inject -f FILE|-",
		Short: "add the weft sidecar to the workloads of YAML manifests (inject serve: the injection webhook)",
		Long: `inject reads YAML manifests (one or many documents separated by ---) from
FILE, or from stdin with -f -, and prints them with the weft sidecar added to
every Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job and CronJob
(also inside a v1 List). Offline there are no namespace labels to consult, so
every workload is injected unless its pod template carries the annotation
weft.dev/inject: "false". Other documents, and workloads already injected or
opted out, are printed byte for byte as they came, so inject is idempotent:

    weft inject -f app.yaml | kubectl apply -f -

Nothing is printed unless every document could be read.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return errors.New("inject: say which manifests: -f FILE, or -f - for stdin")
			}
			var in []byte
			var err error
			if file == "-" {
				in, err = io.ReadAll(cmd.InOrStdin())
			} else {
				in, err = os.ReadFile(file)
			}
			if err != nil {
				return fmt.Errorf("inject: %w", err)
			}
			out, err := inject.InjectYAML(in, cfg)
			if err != nil {
				if file == "-" {
					file = "stdin"
				}
				return fmt.Errorf("inject %s: %w", file, err)
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&cfg.Image, "image", cfg.Image, "image of the sidecar container")
	pf.StringVar(&cfg.Join, "join", cfg.Join, "gossip address the sidecar joins (WEFT_JOIN)")
	pf.StringVar(&cfg.GossipSecret, "gossip-secret", cfg.GossipSecret, "Secret holding the gossip key, in the pod's namespace")
	pf.StringVar(&cfg.GossipSecretKey, "gossip-secret-key", cfg.GossipSecretKey, "key of --gossip-secret holding the gossip key")
	cmd.Flags().StringVarP(&file, "filename", "f", "", "manifests to inject, - for stdin")
	cmd.AddCommand(newInjectServeCmd(g, &cfg))
	return cmd
}

func newInjectServeCmd(g *globalFlags, cfg *inject.Config) *cobra.Command {
	var (
		addr, tlsDir                      string
		service, namespace, webhookConfig string
		selfSigned                        bool
	)
	cmd := &cobra.Command{
		Use:   "serve --tls-dir DIR",
		Short: "run the mutating admission webhook that injects the weft sidecar into pods",
		Long: `serve answers admission.k8s.io/v1 AdmissionReviews for pods on POST /inject
(and GET /healthz) over TLS, with tls.crt and tls.key from --tls-dir (a mounted
kubernetes.io/tls Secret works as it is). With --self-signed it makes its own
CA and a certificate for <service>.<namespace>.svc in --tls-dir instead (reused
across restarts while valid) and sets the caBundle of the
MutatingWebhookConfiguration --webhook-config to that CA.

Pods are injected when their namespace is labelled weft.dev/inject=enabled or
they are annotated weft.dev/inject: "true", and not when annotated "false". The
namespace labels are read through the Kubernetes API (in-cluster config; the
service account needs get on namespaces, and get/update on
mutatingwebhookconfigurations with --self-signed). Out of a cluster only the
annotation opts pods in. The webhook never rejects a pod.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.logger()
			if err != nil {
				return err
			}
			if tlsDir == "" {
				return errors.New("inject serve: --tls-dir is required")
			}
			ctx := cmd.Context()
			client, cerr := inClusterClient()
			if selfSigned {
				if cerr != nil && webhookConfig != "" {
					return fmt.Errorf("inject serve: --self-signed sets the caBundle of %s through the Kubernetes API: %w", webhookConfig, cerr)
				}
				bc := inject.BootstrapConfig{Dir: tlsDir, Service: service, Namespace: namespace, WebhookConfig: webhookConfig}
				if cerr == nil {
					bc.Client = client
				}
				if _, err := inject.Bootstrap(ctx, bc, time.Now(), log); err != nil {
					return fmt.Errorf("inject serve: %w", err)
				}
			}
			var nsLabels inject.NamespaceLabelsFunc
			if cerr == nil {
				nsLabels = namespaceLabels(client)
			} else {
				log.Warn("no Kubernetes API: only pods annotated weft.dev/inject=true are injected", "err", cerr)
			}
			wh, err := inject.NewWebhook(*cfg, nsLabels, log)
			if err != nil {
				return err
			}
			mux := http.NewServeMux()
			mux.Handle("/inject", wh)
			mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("inject serve: %w", err)
			}
			return inject.ServeTLS(ctx, ln, inject.ServerConfig{CertDir: tlsDir, Handler: mux}, log)
		},
	}
	f := cmd.Flags()
	f.StringVar(&addr, "addr", ":8443", "listen address")
	f.StringVar(&tlsDir, "tls-dir", "", "directory of tls.crt and tls.key (written there with --self-signed)")
	f.BoolVar(&selfSigned, "self-signed", false, "generate a CA and serving certificate and set the webhook's caBundle")
	f.StringVar(&service, "service", "weft-injector", "Service in front of the webhook (--self-signed)")
	f.StringVar(&namespace, "namespace", "weft-system", "namespace of that Service (--self-signed)")
	f.StringVar(&webhookConfig, "webhook-config", "weft-injector", "MutatingWebhookConfiguration whose caBundle --self-signed sets; empty: none")
	return cmd
}

func inClusterClient() (*kubeapi.Client, error) {
	cfg, err := kubeapi.InCluster()
	if err != nil {
		return nil, err
	}
	// Every call has a deadline, also the caBundle update at start.
	cfg.Timeout = 10 * time.Second
	cfg.UserAgent = "weft-injector"
	client, err := kubeapi.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("in-cluster config: %w", err)
	}
	return client, nil
}

// namespaceLabels asks the apiserver for a namespace's labels; one Get per
// admitted pod that the annotation does not decide.
func namespaceLabels(client *kubeapi.Client) inject.NamespaceLabelsFunc {
	return func(ctx context.Context, name string) (map[string]string, error) {
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		ns, err := client.GetNamespace(ctx, name)
		if err != nil {
			return nil, err
		}
		return ns.Labels, nil
	}
}
