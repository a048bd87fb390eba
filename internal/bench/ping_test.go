package bench

import "testing"

func TestMedianPing(t *testing.T) {
	out := `PING 100.64.1.2 (100.64.1.2) 56(84) bytes of data.
64 bytes from 100.64.1.2: icmp_seq=1 ttl=63 time=0.310 ms
64 bytes from 100.64.1.2: icmp_seq=2 ttl=63 time=9.100 ms
64 bytes from 100.64.1.2: icmp_seq=3 ttl=63 time=0.290 ms

--- 100.64.1.2 ping statistics ---
3 packets transmitted, 3 received, 0% packet loss, time 101ms
rtt min/avg/max/mdev = 0.290/3.233/9.100/4.148 ms
`
	got, err := medianPing(out)
	if err != nil || got != 310 {
		t.Errorf("medianPing = %v, %v; want 310 (µs), nil", got, err)
	}
	if _, err := medianPing("2 packets transmitted, 0 received, 100% packet loss"); err == nil {
		t.Error("medianPing without replies: no error")
	}
}
