package netstack

import (
	"bufio"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn/bindtest"
	"golang.zx2c4.com/wireguard/device"
)

// TestWireGuardOverStacks runs real wireguard-go devices on two stacks,
// joined by wireguard-go's in-memory bind: the path the netstack backend
// takes, with crypto, handshakes and wireguard-go's own batching and
// offsets.
func TestWireGuardOverStacks(t *testing.T) {
	const size = 4 << 20
	stacks := [2]*Stack{newStack(t, 1420, addrA), newStack(t, 1420, addrB)}
	binds := bindtest.NewChannelBinds()
	keys := [2]*ecdh.PrivateKey{newKey(t), newKey(t)}
	allowed := [2]string{"100.64.0.2/32", "100.64.0.1/32"} // each device's peer
	var devs [2]*device.Device
	for i := range devs {
		devs[i] = device.NewDevice(stacks[i], binds[i], device.NewLogger(device.LogLevelSilent, ""))
		dev := devs[i]
		// device.Close closes the stack too; the stack's own cleanup
		// then finds it closed.
		t.Cleanup(dev.Close)
		cfg := fmt.Sprintf("private_key=%s\nlisten_port=0\nreplace_peers=true\npublic_key=%s\nreplace_allowed_ips=true\nallowed_ip=%s\n",
			hex.EncodeToString(keys[i].Bytes()), hex.EncodeToString(keys[1-i].PublicKey().Bytes()), allowed[i])
		if err := dev.IpcSet(cfg); err != nil {
			t.Fatalf("device %d: configure: %v", i, err)
		}
		if err := dev.Up(); err != nil {
			t.Fatalf("device %d: up: %v", i, err)
		}
	}
	for i, dev := range devs {
		cfg := fmt.Sprintf("public_key=%s\nendpoint=127.0.0.1:%d\n",
			hex.EncodeToString(keys[1-i].PublicKey().Bytes()), listenPort(t, devs[1-i]))
		if err := dev.IpcSet(cfg); err != nil {
			t.Fatalf("device %d: set endpoint: %v", i, err)
		}
	}

	ln, err := stacks[1].Listen("tcp", ":5001")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := acceptOne(t, ln)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err := stacks[0].DialContext(ctx, "tcp", "100.64.0.2:5001")
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server := <-accepted
	if server == nil {
		t.FailNow()
	}

	exchangeBoth(t, client, server, size, 60*time.Second)
}

func newKey(t *testing.T) *ecdh.PrivateKey {
	t.Helper()
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// listenPort reads the port dev's bind opened from its UAPI state.
func listenPort(t *testing.T, dev *device.Device) int {
	t.Helper()
	state, err := dev.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(state))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "listen_port="); ok {
			var port int
			if _, err := fmt.Sscan(v, &port); err == nil {
				return port
			}
		}
	}
	t.Fatalf("no listen_port in device state:\n%s", state)
	return 0
}
