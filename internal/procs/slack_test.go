package procs

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// slackHelperEnv carries the slack the helper process asks for.
const slackHelperEnv = "WEFT_PROCS_SLACK_HELPER"

// TestExecWithTimerSlack runs this test binary as a helper that calls
// ExecWithTimerSlack: it must execute itself exactly once, keep its pid
// and its name, and come back with every thread at the new slack.
func TestExecWithTimerSlack(t *testing.T) {
	cur, want, out, err := runSlackHelper(t, false)
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	var starts, threads []string
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 4 && f[0] == "start":
			starts = append(starts, sc.Text())
		case len(f) == 3 && f[0] == "thread":
			threads = append(threads, sc.Text())
		}
	}
	if len(starts) != 2 {
		t.Fatalf("the helper started %d times, want 2 (itself, then once executed again):\n%s", len(starts), out)
	}
	var pid, comm [2]string
	var slack [2]int64
	for i, s := range starts {
		fmt.Sscanf(s, "start %s %d %s", &pid[i], &slack[i], &comm[i])
	}
	if pid[0] != pid[1] {
		t.Errorf("pid changed across the exec: %s, then %s", pid[0], pid[1])
	}
	if comm[0] != comm[1] {
		t.Errorf("process name changed across the exec: %q, then %q (ps and pgrep go by it)", comm[0], comm[1])
	}
	if time.Duration(slack[0]) != cur {
		t.Errorf("first start: slack %v, want the parent's %v", time.Duration(slack[0]), cur)
	}
	if time.Duration(slack[1]) != want {
		t.Errorf("after the exec: slack %v, want %v", time.Duration(slack[1]), want)
	}
	if len(threads) < 2 {
		t.Fatalf("the helper listed %d threads, want the runtime's several:\n%s", len(threads), out)
	}
	for _, l := range threads {
		var tid string
		var ns int64
		fmt.Sscanf(l, "thread %s %d", &tid, &ns)
		if time.Duration(ns) != want {
			t.Errorf("thread %s: slack %v, want %v (sysmon and the others inherit it)", tid, time.Duration(ns), want)
		}
	}
}

// runSlackHelper runs TestTimerSlackHelper in a new process of this test
// binary, asking for want, a slack above this process's cur; execed starts
// it as the process ExecWithTimerSlack has executed.
func runSlackHelper(t *testing.T, execed bool) (cur, want time.Duration, out []byte, err error) {
	t.Helper()
	if cur, err = TimerSlack(); err != nil {
		t.Fatal(err)
	}
	want = max(2*cur, 3*time.Millisecond)
	cmd := exec.Command(os.Args[0], "-test.run=^TestTimerSlackHelper$", "-test.v")
	cmd.Env = append(os.Environ(), slackHelperEnv+"="+strconv.FormatInt(want.Nanoseconds(), 10))
	if execed {
		cmd.Env = append(cmd.Env, execedEnv+"="+want.String())
	}
	out, err = cmd.CombinedOutput()
	return cur, want, out, err
}

// TestTimerSlackHelper is the helper process of TestExecWithTimerSlack; it
// does nothing in a normal test run.
func TestTimerSlackHelper(t *testing.T) {
	v := os.Getenv(slackHelperEnv)
	if v == "" {
		return
	}
	ns, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := TimerSlack()
	if err != nil {
		t.Fatal(err)
	}
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("start %d %d %s\n", os.Getpid(), cur.Nanoseconds(), strings.TrimSpace(string(comm)))
	os.Stdout.Sync()
	err = ExecWithTimerSlack(time.Duration(ns))
	if _, ok := os.LookupEnv(execedEnv); !ok {
		fmt.Printf("%s unset\n", execedEnv)
	}
	if err != nil {
		t.Fatal(err)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		b, err := os.ReadFile(filepath.Join("/proc", task.Name(), "timerslack_ns"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("thread %s %s\n", task.Name(), strings.TrimSpace(string(b)))
	}
}

// Where the kernel does not keep the slack across the exec (it ignores it
// for real-time threads), the executed process must not execute itself
// again and again: it reports the error and goes on.
func TestExecWithTimerSlackOnlyOnce(t *testing.T) {
	// As if the helper had executed itself and lost the slack.
	_, _, out, _ := runSlackHelper(t, true)
	if n := strings.Count(string(out), "\nstart "); n != 1 {
		t.Errorf("the helper started %d times, want 1:\n%s", n, out)
	}
	if !strings.Contains(string(out), "after executing itself") {
		t.Errorf("no error about the lost slack:\n%s", out)
	}
	if !strings.Contains(string(out), execedEnv+" unset") {
		t.Errorf("%s left in the environment:\n%s", execedEnv, out)
	}
}

func TestExecWithTimerSlackRefusesNonPositive(t *testing.T) {
	for _, d := range []time.Duration{0, -time.Millisecond} {
		if err := ExecWithTimerSlack(d); err == nil {
			t.Errorf("ExecWithTimerSlack(%v): no error", d)
		}
	}
}
