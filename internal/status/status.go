// Package status renders an agent's report for people: the table `weft
// status` prints, which `weft demo` shows too.
package status

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/weftnet/weft/agent/api"
)

// Print writes the report as a header line about the node itself and a
// table with one row per member, ages taken relative to now.
func Print(w io.Writer, st api.Report, now time.Time) {
	s := st.Self
	gossip := "encrypted"
	if !s.GossipEncrypted {
		gossip = "NOT ENCRYPTED"
	}
	fmt.Fprintf(w, "node %s  key %s  mode %s  mtu %d  block %s  address %s  gossip %s  ready %v\n",
		s.Name, orDash(s.Fingerprint), orDash(s.Mode), s.MTU, orDash(s.Block), orDash(s.Address), gossip, st.Ready)
	if st.LastError != "" {
		fmt.Fprintf(w, "last error: %s\n", st.LastError)
	}
	// Rows are padded into a buffer and trimmed: an empty last cell would
	// leave trailing blanks.
	var tb strings.Builder
	tw := tabwriter.NewWriter(&tb, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tMODE\tENDPOINT\tBLOCK\tHANDSHAKE\tRX\tTX\tCONFLICTS\tNOTE")
	for _, m := range st.Members {
		hs, rx, tx := "-", "-", "-"
		if m.Peer != nil {
			hs = "never"
			if !m.Peer.LastHandshake.IsZero() {
				hs = Age(now.Sub(m.Peer.LastHandshake)) + " ago"
			}
			rx, tx = Bytes(m.Peer.RxBytes), Bytes(m.Peer.TxBytes)
		}
		note := ""
		switch {
		case m.Name == s.Name:
			note = "self"
		case m.TagsError != "":
			note = "ignored: " + m.TagsError
		}
		state := m.State
		if m.State != "alive" && !m.Since.IsZero() {
			state += " " + Age(now.Sub(m.Since))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, state, orDash(m.Mode), orDash(m.Endpoint),
			orDash(m.Block), hs, rx, tx, conflicts(m, st.Conflicts), note)
	}
	tw.Flush()
	for _, l := range strings.SplitAfter(tb.String(), "\n") {
		if l != "" {
			fmt.Fprintln(w, strings.TrimRight(l, " \n"))
		}
	}
}

// conflicts describes the lease conflicts a member is in: the ones this
// node recorded, and a block it claims without owning it.
func conflicts(m api.MemberReport, all []api.ConflictReport) string {
	var out []string
	lost := false
	for _, c := range all {
		switch m.Name {
		case c.Loser:
			out = append(out, "lost "+c.Block+" to "+c.Winner)
			lost = lost || c.Block == m.Block
		case c.Winner:
			out = append(out, "won "+c.Block+" over "+c.Loser)
		}
	}
	if m.Block != "" && !m.OwnsBlock && m.TagsError == "" && !lost {
		out = append(out, "lost "+m.Block)
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, ", ")
}

// Age is a duration as people read an age: 4s, 3m12s, 2h5m, 3d4h.
func Age(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

// Bytes is a byte count in binary units: 512 B, 1.5 KiB, 3.2 GiB.
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for v := n / unit; v >= unit; v /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
