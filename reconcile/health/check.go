package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"syscall"
	"time"

	"resil.dev/resil/desired"
	"resil.dev/resil/internal/ident"
)

// ErrCannotProbe wraps the error of an attempt the agent itself could not
// make: its own sandbox denied the connection (IPAddressDeny= of the
// agent's unit makes connect fail with EPERM) or the switch to the
// service's user, or the probe command could not be executed. It is no
// verdict on the service: the probe's state does not move, so a liveness
// probe never restarts a service for it; the planner reports it.
var ErrCannotProbe = errors.New("the agent cannot run this probe")

// cannotProbe marks err as ErrCannotProbe when it is a permission error.
func cannotProbe(err error) error {
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("%w: %w", ErrCannotProbe, err)
	}
	return err
}

// Checker runs one attempt of a probe. A nil error passes.
type Checker interface {
	Check(ctx context.Context) error
}

// Identity is who an exec probe runs as: the service's user and group
// ("" keeps the agent's own).
type Identity struct{ User, Group string }

// NewChecker returns the checker of p (its defaults filled in by
// desired.Probe.Effective).
func NewChecker(p desired.Probe, id Identity) (Checker, error) {
	switch {
	case p.HTTP != nil:
		lo, hi, err := desired.StatusRange(p.HTTP.Status)
		if err != nil {
			return nil, fmt.Errorf("http probe: %w", err)
		}
		return &httpCheck{url: p.HTTP.URL, lo: lo, hi: hi, headers: p.HTTP.Headers, client: &http.Client{
			// A probe follows no redirect (like the kubelet's, a 3xx is an
			// answer) and keeps no connection between attempts.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			Transport:     &http.Transport{DisableKeepAlives: true, Proxy: nil},
		}}, nil
	case p.TCP != "":
		return tcpCheck(p.TCP), nil
	case len(p.Exec) > 0:
		cred, err := credential(id)
		if err != nil {
			return nil, fmt.Errorf("exec probe: %w", err)
		}
		return &execCheck{argv: p.Exec, cred: cred}, nil
	}
	return nil, errors.New("probe has neither http, tcp nor exec")
}

type httpCheck struct {
	url     string
	lo, hi  int
	headers map[string]string
	client  *http.Client
}

func (c *httpCheck) Check(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return fmt.Errorf("http probe %s: %w", c.url, err)
	}
	req.Header.Set("User-Agent", "resil-probe")
	for k, v := range c.headers {
		if http.CanonicalHeaderKey(k) == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return cannotProbe(fmt.Errorf("http probe: %w", err))
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < c.lo || resp.StatusCode > c.hi {
		return fmt.Errorf("http probe %s: status %d, want %d-%d", c.url, resp.StatusCode, c.lo, c.hi)
	}
	return nil
}

type tcpCheck string

func (c tcpCheck) Check(ctx context.Context) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", string(c))
	if err != nil {
		return cannotProbe(fmt.Errorf("tcp probe: %w", err))
	}
	return conn.Close()
}

type execCheck struct {
	argv []string
	cred *syscall.Credential
}

func (c *execCheck) Check(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, c.argv[0], c.argv[1:]...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Dir = "/"
	// Its own process group, killed whole when the attempt times out.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: c.cred}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return fmt.Errorf("exec probe %s: timed out", c.argv[0])
	}
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		// Not started: the user switch or the exec was refused.
		return cannotProbe(fmt.Errorf("exec probe %s: %w", c.argv[0], err))
	}
	if err != nil {
		if len(out) > 200 {
			out = out[:200]
		}
		return fmt.Errorf("exec probe %s: %w: %q", c.argv[0], err, out)
	}
	return nil
}

// credential resolves the user and group an exec probe runs as.
func credential(id Identity) (*syscall.Credential, error) {
	r, err := ident.Resolve(id.User, id.Group)
	if err != nil || r.Cred == nil {
		return nil, err
	}
	if r.Cred.Groups == nil {
		r.Cred.Groups = []uint32{r.Cred.Gid}
	}
	return r.Cred, nil
}

// Runner runs an exec probe's argv as a user somewhere other than in the
// agent's own process (the systemd backend: a transient unit, so the probe
// needs no privilege of the agent's and gets systemd's own User= handling).
type Runner interface {
	Run(ctx context.Context, argv []string, id Identity) error
}

// runnerCheck is an exec probe run by a Runner.
type runnerCheck struct {
	r    Runner
	argv []string
	id   Identity
}

func (c *runnerCheck) Check(ctx context.Context) error {
	if err := c.r.Run(ctx, c.argv, c.id); err != nil {
		return fmt.Errorf("exec probe %s: %w", c.argv[0], err)
	}
	return nil
}
