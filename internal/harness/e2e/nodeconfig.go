package e2e

import "fmt"

// nodeScript is pid 1 of a node's PID namespace (run by
// `unshare --mount --uts --pid --fork --kill-child --mount-proc
// --propagation private` inside the node's network namespace): it gives the
// node its own view of the filesystem, then runs containerd and kubelet
// and waits. Arguments: DIR NAME IP BINDIR IMAGES "MOUNTS...".
const nodeScript = `set -eu
dir=$1 name=$2 ip=$3 bin=$4 images=$5 mounts=$6
export PATH=$bin:/usr/sbin:/usr/bin:/sbin:/bin
# libmount (mount here, and kubelet's mounts) keeps its table of
# userspace mount options in /run/mount, on the machine's shared /run:
# the node's own file instead.
export LIBMOUNT_UTAB="$dir/utab"
hostname "$name"
# A sysfs of this network namespace (/sys/class/net shows the node's
# links), with the cgroup tree carried across.
mkdir -p "$dir/cgroup"
mount --rbind /sys/fs/cgroup "$dir/cgroup"
mount -t sysfs sysfs /sys
mount --move "$dir/cgroup" /sys/fs/cgroup
# The pods' network namespaces are the node's alone.
mount -t tmpfs tmpfs /run/netns
for m in $mounts; do
	d=$(echo "${m#/}" | tr / -)
	mount --bind "$dir/fs/$d" "$m"
done
for f in vm/overcommit_memory kernel/panic kernel/panic_on_oops; do
	mount --bind "$dir/sysctl-${f##*/}" "/proc/sys/$f"
done
# Pods reach the apiserver (outside the pod range) from the node's address,
# as a cloud's ip-masq-agent does; pod to pod stays unmasqueraded.
iptables -w -t nat -A POSTROUTING -s 100.64.0.0/10 ! -d 100.64.0.0/10 -o eth0 -j MASQUERADE
containerd --config "$dir/containerd.toml" >"$dir/containerd.log" 2>&1 &
i=0
until ctr version >/dev/null 2>&1; do
	i=$((i+1))
	[ $i -le 600 ] || { echo "containerd not up after 60 s"; exit 1; }
	sleep 0.1
done
ctr -n k8s.io images import "$images"
kubelet --config="$dir/kubelet.yaml" --kubeconfig="$dir/kubelet.kubeconfig" \
	--hostname-override="$name" --node-ip="$ip" >"$dir/kubelet.log" 2>&1 &
echo "node $name: containerd and kubelet started"
wait
`

// containerdConfig is a node's containerd configuration (containerd v2,
// config version 3): runc from Debian, the CRI plugin's CNI in the standard
// places, the sandbox image pinned to the lab's pause image.
func containerdConfig() string {
	return fmt.Sprintf(`version = 3
root = "/var/lib/containerd"
state = "/run/containerd"

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins."io.containerd.cri.v1.runtime"]
  # No CAP_SYS_RESOURCE here: without it runc fails every container with
  # "can't get final child's PID from pipe".
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/opt/cni/bin"]
    conf_dir = "/etc/cni/net.d"
    # Bring each pod's lo up in containerd itself: /opt/cni/bin holds only
    # what weft installs (no loopback plugin from a distribution package).
    use_internal_loopback = true

# The "opt" service makes /opt/containerd/{bin,lib} on the machine's shared
# /opt: the node's own /var/lib/containerd instead.
[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/containerd/opt"

# NRI's socket (/var/run/nri/nri.sock) would be shared by every lab node:
# the second containerd fails to bind it. The lab needs no NRI plugins.
[plugins."io.containerd.nri.v1.nri"]
  disable = true

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = %q
`, PauseImage)
}

// kubeletConfig is a node's KubeletConfiguration: cgroup v1 with the
// cgroupfs driver under a cgroupRoot of its own, no swap check, anonymous
// read access for the apiserver's exec and logs (a lab), image garbage
// collection and disk eviction off (the images cannot be pulled again).
func kubeletConfig(cgroupRoot string) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %s
cgroupsPerQOS: true
failSwapOn: false
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%%"
  imagefs.available: "1%%"
  nodefs.inodesFree: "1%%"
nodeStatusUpdateFrequency: 4s
syncFrequency: 10s
fileCheckFrequency: 10s
resolvConf: /etc/resolv.conf
maxPods: 50
`, cgroupRoot)
}
