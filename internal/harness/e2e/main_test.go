package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// lab is the cluster every test of the package shares: bringing one up
// takes tens of seconds, so TestMain does it once.
var lab *Cluster

// testNodes is how many nodes the cluster starts with; one more lab
// namespace is kept spare for the node that joins later.
const testNodes = 3

// skipReason, when set, is why the cluster was not brought up; every test
// then skips with it (needCluster), so go test reports SKIP, not ok.
var skipReason string

func TestMain(m *testing.M) {
	flag.Parse()
	switch {
	case testing.Short():
		skipReason = "a real Kubernetes cluster: runs without -short"
	case os.Getenv("WEFT_E2E") == "0":
		skipReason = "WEFT_E2E=0 leaves the real-node cluster out"
	case os.Getuid() != 0:
		skipReason = "needs root (namespaces, mounts, cgroups)"
	}
	if skipReason != "" {
		os.Exit(m.Run())
	}
	os.Exit(run(m))
}

// needCluster skips t when TestMain did not bring the cluster up.
func needCluster(t *testing.T) {
	t.Helper()
	if lab == nil {
		t.Skip(skipReason)
	}
}

func run(m *testing.M) int {
	binDir, err := binDir()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "weft-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	start := time.Now()
	images, _, err := BuildImages(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: images:", err)
		return 1
	}
	fmt.Printf("e2e: images built in %v\n", time.Since(start).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start = time.Now()
	lab, err = Up(ctx, Config{
		Nodes: testNodes, Spare: 1, BinDir: binDir, Images: images, Dir: dir,
		Logf: func(f string, a ...any) { fmt.Printf("e2e: "+f+"\n", a...) },
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: cluster:", err)
		return 1
	}
	fmt.Printf("e2e: cluster up in %v\n", time.Since(start).Round(time.Millisecond))
	liveNodes = lab.Nodes[:testNodes]
	code := m.Run()
	if err := lab.Down(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: tear down:", err)
		code = 1
	}
	// The cluster leaves nothing behind.
	if left := lab.Leftovers(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "e2e: left after the tear down:\n  %s\n", strings.Join(left, "\n  "))
		code = 1
	} else {
		fmt.Println("e2e: torn down, nothing left (namespaces, cgroups, mounts)")
	}
	return code
}

// binDir is $WEFT_K8S_BIN or bin/k8s of the module (`make k8s` fills it).
func binDir() (string, error) {
	d := os.Getenv("WEFT_K8S_BIN")
	if d == "" {
		wd, err := os.Getwd()
		if err != nil {
			return "", err
		}
		d = filepath.Join(wd, "..", "..", "..", "bin", "k8s")
	}
	for _, b := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kubectl", "containerd", "containerd-shim-runc-v2", "ctr"} {
		if _, err := os.Stat(filepath.Join(d, b)); err != nil {
			return "", fmt.Errorf("%w: run `make k8s` first (builds Kubernetes and containerd from the Go module proxy into bin/k8s; 10-15 minutes the first time, cached after)", err)
		}
	}
	// Debian's, installed by `make deps`.
	for _, c := range []string{"etcd", "runc", "iptables", "nsenter", "unshare", "tcpdump"} {
		if _, err := exec.LookPath(c); err != nil {
			return "", fmt.Errorf("%w: run `make deps` first (installs Debian's etcd-server, runc, iptables, util-linux, tcpdump)", err)
		}
	}
	return filepath.Abs(d)
}
