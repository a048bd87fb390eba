package api

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestHandoverNote(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	if _, ok := ReadHandover(sock, now); ok {
		t.Fatal("a note where none was written")
	}
	h := Handover{Block: "100.64.3.0/24", Until: now.Add(HandoverGrace)}
	if err := WriteHandover(sock, h); err != nil {
		t.Fatal(err)
	}
	got, ok := ReadHandover(sock, now.Add(HandoverGrace-time.Second))
	if !ok || got.Block != h.Block || !got.Until.Equal(h.Until) {
		t.Errorf("read %+v %v, want %+v", got, ok, h)
	}
	if _, ok := ReadHandover(sock, now.Add(HandoverGrace)); ok {
		t.Error("the note still counts at its deadline")
	}
	for _, bad := range []string{"", "{", `{"block":"","until":"2030-01-01T00:00:00Z"}`, `{"block":"not a block","until":"2030-01-01T00:00:00Z"}`, `{"block":"100.64.3.0/24"}`} {
		if err := os.WriteFile(HandoverPath(sock), []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if h, ok := ReadHandover(sock, now); ok {
			t.Errorf("note %q accepted as %+v", bad, h)
		}
	}
}
