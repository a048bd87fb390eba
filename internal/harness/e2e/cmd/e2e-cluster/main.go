// Command e2e-cluster brings up internal/harness/e2e's lab cluster and keeps it up
// for poking at by hand (kubectl against it, a shell "on" a node) until it
// is interrupted; then it tears everything down, as the tests do.
//
//	make e2e-up                 (go run ./internal/harness/e2e/cmd/e2e-cluster)
//	go run ./internal/harness/e2e/cmd/e2e-cluster -nodes 2
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/weftnet/weft/internal/harness/e2e"
)

func main() {
	nodes := flag.Int("nodes", 3, "Kubernetes nodes to start")
	binDir := flag.String("bin", "bin/k8s", "Kubernetes and containerd binaries (make k8s)")
	flag.Parse()
	if err := run(*nodes, *binDir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e-cluster:", err)
		os.Exit(1)
	}
}

func run(nodes int, binDir string) error {
	bin, err := filepath.Abs(binDir)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "weft-e2e-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	images, _, err := e2e.BuildImages(dir)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	upCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	c, err := e2e.Up(upCtx, e2e.Config{
		Nodes: nodes, BinDir: bin, Images: images, Dir: dir,
		Logf: func(f string, a ...any) { fmt.Printf(f+"\n", a...) },
	})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("tearing the cluster down")
		if err := c.Down(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e-cluster: tear down:", err)
		}
	}()
	kubectl := fmt.Sprintf("nsenter --net=%s -- %s --kubeconfig=%s", c.CP.Path(), filepath.Join(bin, "kubectl"), c.Kubeconfig)
	fmt.Printf(`
The cluster is up. In another shell, as root:

  alias k='%s'
  k get nodes -o wide

Install weft as the tests do (image weft.test/weft:e2e is on every node):

  k apply -k internal/harness/e2e/testdata/install
  %s keygen --k8s-secret weft-gossip | k apply -f -

A shell on a node (its network, mount, UTS and PID namespaces):
`, kubectl, filepath.Join(dir, "weft"))
	for _, n := range c.Nodes {
		if pid := n.InitPID(); pid > 0 {
			fmt.Printf("  nsenter --target %d --net --mount --uts --pid sh    # %s (%s)\n", pid, n.Name, n.Net.Addr())
		}
	}
	fmt.Printf("\nLogs: %s/<node>/{node,containerd,kubelet}.log and %s/cp/*.log\nInterrupt (^C) to tear it down.\n", dir, dir)
	<-ctx.Done()
	return nil
}
