package chaos

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashgrab/flashgrab/internal/testenv"
)

// binDir holds the flashgrab binary the suite builds once (TestMain removes it).
var binDir string

var build struct {
	once sync.Once
	path string
	err  error
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "flashgrab-chaos-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos: temp dir:", err)
		os.Exit(2)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// flashgrab returns the path of the flashgrab binary, built on first use
// with the same race setting as the test, so the build reuses its packages,
// or $FLASHGRAB_CHAOS_BIN when set.
func flashgrab(t *testing.T) string {
	t.Helper()
	build.once.Do(func() {
		// A binary built elsewhere (another branch, a release) may be
		// put through the same faults.
		if path := os.Getenv("FLASHGRAB_CHAOS_BIN"); path != "" {
			build.path = path
			return
		}
		goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goTool); err != nil {
			goTool = "go"
		}
		build.path = filepath.Join(binDir, "flashgrab")
		args := []string{"build", "-o", build.path}
		if raceBuild {
			args = append(args, "-race")
		}
		cmd := exec.Command(goTool, append(args, "github.com/flashgrab/flashgrab/cmd/flashgrab")...)
		if out, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.path
}

// hasCommand reports whether the flashgrab binary has a subcommand name
// (rebuild is being built elsewhere; its row runs once it exists).
func hasCommand(t *testing.T, name string) bool {
	out, _ := exec.Command(flashgrab(t), "--help").CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.TrimSuffix(f[0], ",") == name {
			return true
		}
	}
	return false
}

// instance is one `flashgrab serve` subprocess: the test may kill it with
// SIGKILL and start it again with the same arguments on the same address.
type instance struct {
	addr string
	args []string
	log  string // its stderr and stdout, appended across restarts
	cmd  *exec.Cmd
	done chan struct{}
}

// newInstance prepares (does not start) a serve on a free loopback port.
func newInstance(t *testing.T, args ...string) *instance {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	in := &instance{addr: addr, log: filepath.Join(t.TempDir(), "serve.log"),
		args: append([]string{"serve", "--addr", addr}, args...)}
	t.Cleanup(in.kill)
	return in
}

// start runs the process and waits until /readyz answers 200.
func (in *instance) start(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(in.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	in.cmd = exec.Command(flashgrab(t), in.args...)
	in.cmd.Stdout, in.cmd.Stderr = f, f
	if err := in.cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start flashgrab %v: %v", in.args, err)
	}
	done, cmd := make(chan struct{}), in.cmd
	in.done = done
	go func() { _ = cmd.Wait(); f.Close(); close(done) }()
	hc := &http.Client{Timeout: time.Second}
	testenv.Eventually(t, 60*time.Second, func() (bool, string) {
		select {
		case <-done:
			t.Fatalf("serve on %s exited at start-up: %s", in.addr, in.tail())
		default:
		}
		resp, err := hc.Get("http://" + in.addr + "/readyz")
		if err != nil {
			return false, fmt.Sprintf("GET /readyz on %s: %v", in.addr, err)
		}
		resp.Body.Close()
		return resp.StatusCode == 200, fmt.Sprintf("GET /readyz on %s: %d, want 200", in.addr, resp.StatusCode)
	})
}

// kill sends SIGKILL (no shutdown, no last settlement) and waits for the
// exit; killing a stopped instance is harmless.
func (in *instance) kill() {
	if in.cmd == nil {
		return
	}
	_ = in.cmd.Process.Kill()
	<-in.done
	in.cmd = nil
}

// tail is the end of the instance's log, for failure messages.
func (in *instance) tail() string {
	b, _ := os.ReadFile(in.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// runCommand runs a flashgrab subcommand to completion and returns its exit
// status and output.
func runCommand(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, flashgrab(t), args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil && cmd.ProcessState == nil {
		t.Fatalf("flashgrab %v: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), out.String()
}
