package pgtest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvRequirePgBouncer names the environment variable that, set to 1, makes
// a missing pgbouncer binary fail the test instead of skipping it.
const EnvRequirePgBouncer = "APQUEUE_REQUIRE_PGBOUNCER"

// pgBouncerPaths are where Debian's pgbouncer package installs the binary,
// tried after PATH (sbin is often not on a user's PATH).
var pgBouncerPaths = []string{"/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer"}

// PgBouncer starts pgBouncer (Debian's pgbouncer package) in transaction
// pooling mode in front of the test database, on a free loopback port, with
// its configuration in a directory of t's own, and stops it when t ends. It
// returns a connection string to the test database through pgBouncer, under
// a database name of that pgBouncer's own.
//
// Without the binary the test is skipped with a message saying so, unless
// EnvRequirePgBouncer is 1 (CI installs pgbouncer and sets it), which turns
// the skip into a failure. Without TEST_DATABASE_URL it skips or fails as
// New does.
func PgBouncer(t testing.TB) string {
	t.Helper()
	url := URL(t)
	bin := pgBouncerBinary()
	if bin == "" {
		if os.Getenv(EnvRequirePgBouncer) == "1" {
			t.Fatalf("pgbouncer is not installed but %s=1: this test needs it (apt-get install pgbouncer)", EnvRequirePgBouncer)
		}
		t.Skipf("pgbouncer is not installed: skipping a test that needs it (apt-get install pgbouncer, or set %s=1 to fail instead)",
			EnvRequirePgBouncer)
	}
	server, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatalf("pgtest: parse %s: %v", EnvURL, err)
	}
	// The port was free a moment ago; another process may take it before
	// pgbouncer listens, which then exits: try again on another.
	const tries = 3
	for try := 1; ; try++ {
		conn, output, exited := startPgBouncer(t, bin, server, pickPort(t))
		if !exited {
			return conn
		}
		if try == tries {
			t.Fatalf("pgtest: pgbouncer exited %d times: %s", tries, output)
		}
		t.Logf("pgtest: pgbouncer exited, trying another port: %s", output)
	}
}

// startPgBouncer starts pgbouncer on port, in front of server, and waits
// until it answers. It returns the connection string through it, or what
// pgbouncer printed and true when it exited first (as when it could not
// listen on port). A started pgbouncer is stopped when t ends.
func startPgBouncer(t testing.TB, bin string, server *pgx.ConnConfig, port int) (conn, output string, exited bool) {
	t.Helper()
	dir := t.TempDir()
	// The database's name through this pgbouncer is its own, so that
	// another pgbouncer that holds port (another test's) refuses the
	// connection below rather than answering for this one.
	alias := "apqueue_pgbouncer_" + randomHex(6)
	conf := fmt.Sprintf(`[databases]
%s = host=%s port=%d user=%s dbname=%s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
admin_users = %s
pool_mode = transaction
max_client_conn = 500
default_pool_size = 20
ignore_startup_parameters = extra_float_digits
`, alias, server.Host, server.Port, server.User, server.Database, port, filepath.Join(dir, "users.txt"), server.User)
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatalf("pgtest: write pgbouncer %s: %v", name, err)
		}
	}
	write("users.txt", strconv.Quote(server.User)+` ""`+"\n")
	write("pgbouncer.ini", conf)

	args := []string{filepath.Join(dir, "pgbouncer.ini")}
	if os.Geteuid() == 0 {
		// pgbouncer refuses to run as root: it drops to another user,
		// which must be able to read the configuration.
		u := unprivilegedUser(t)
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatalf("pgtest: %v", err)
		}
		args = append([]string{"-u", u}, args...)
	}
	cmd := exec.Command(bin, args...)
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("pgtest: start pgbouncer: %v", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT) // shut down at once
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})

	conn = fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", server.User, port, alias)
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := pgx.Connect(ctx, conn)
		if err == nil {
			_, err = c.Exec(ctx, "SELECT 1", pgx.QueryExecModeSimpleProtocol)
			_ = c.Close(ctx)
		}
		cancel()
		select {
		case <-done:
			// This pgbouncer exited (it could not listen on port).
			return "", out.String(), true
		default:
		}
		if err == nil {
			return conn, "", false
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgtest: pgbouncer did not accept connections: %v\n%s", err, out.String())
		}
		time.Sleep(20 * time.Millisecond) // polling a child process's port
	}
}

func pgBouncerBinary() string {
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p
	}
	for _, p := range pgBouncerPaths {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// unprivilegedUser returns a user for pgbouncer to run as when the tests
// run as root.
func unprivilegedUser(t testing.TB) string {
	for _, name := range []string{"postgres", "nobody"} {
		if _, err := user.Lookup(name); err == nil {
			return name
		}
	}
	t.Fatalf("pgtest: running as root and no user (postgres, nobody) for pgbouncer to run as")
	return ""
}

// pickPort picks the port for pgbouncer to listen on: freePort, or another
// in tests.
var pickPort = freePort

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("pgtest: find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// lockedBuffer collects a child process's output.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
