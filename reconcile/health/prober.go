package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"

	"resil.dev/resil/desired"
)

// Target is one probe of one running main process.
type Target struct {
	Object string // "Service/web"
	Unit   string // "web.service"
	Kind   string // desired.ProbeLiveness or desired.ProbeReadiness
	// Probe has its defaults filled in (desired.Probe.Effective).
	Probe    desired.Probe
	Identity Identity
	// MainPID and Started name the process the probe watches: another
	// process (a restart) begins the probe afresh, after InitialDelay from
	// Started.
	MainPID uint32
	Started time.Time
}

func (t Target) key() string { return t.Unit + "\x00" + t.Kind }

// Status is what a probe found so far.
type Status struct {
	Target
	State State
	// Failures is the current run of failed attempts.
	Failures int
	// LastError is the last failed attempt's error ("" after a pass).
	LastError string
	// Since is when State last changed (zero while Unknown).
	Since time.Time
	// Attempts counts attempts against this process.
	Attempts int
	// CannotProbe: the last attempt could not be made by the agent
	// (ErrCannotProbe, in LastError); State did not move for it.
	CannotProbe bool
}

// Prober runs a loop per Target. Set says which run; Run owns the loops
// and returns once every loop has exited.
type Prober struct {
	log  *zap.Logger
	wake func()
	now  func() time.Time
	// checker builds a probe's checker (NewChecker; tests swap it).
	checker func(desired.Probe, Identity) (Checker, error)

	mu      sync.Mutex
	ctx     context.Context // Run's; nil until Run
	wg      sync.WaitGroup
	loops   map[string]*loop
	pending []Target // Set before Run
	status  map[string]*Status
}

type loop struct {
	t      Target
	cancel context.CancelFunc
}

// New returns a prober. wake is called (never blocking the caller for
// long: it should only signal) whenever a probe's State changes.
func New(log *zap.Logger, wake func()) *Prober {
	if wake == nil {
		wake = func() {}
	}
	return &Prober{log: log, wake: wake, now: time.Now, checker: NewChecker, loops: map[string]*loop{}, status: map[string]*Status{}}
}

// Run runs the probe loops until ctx is done, then waits for them.
func (p *Prober) Run(ctx context.Context) error {
	p.mu.Lock()
	p.ctx = ctx
	pending := p.pending
	p.pending = nil
	p.mu.Unlock()
	if pending != nil {
		p.Set(pending)
	}
	<-ctx.Done()
	p.mu.Lock()
	for k, l := range p.loops {
		l.cancel()
		delete(p.loops, k)
	}
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}

// Set makes exactly targets run: a loop whose target is gone stops, a new
// target starts a loop, and a target whose process or probe changed
// starts afresh (its failure count with it).
func (p *Prober) Set(targets []Target) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx == nil {
		p.pending = append([]Target(nil), targets...)
		return
	}
	if p.ctx.Err() != nil {
		return
	}
	want := map[string]Target{}
	for _, t := range targets {
		want[t.key()] = t
	}
	for k, l := range p.loops {
		if t, ok := want[k]; !ok || !sameTarget(t, l.t) {
			l.cancel()
			delete(p.loops, k)
			delete(p.status, k)
		}
	}
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if _, ok := p.loops[k]; ok {
			continue
		}
		t := want[k]
		ctx, cancel := context.WithCancel(p.ctx)
		p.loops[k] = &loop{t: t, cancel: cancel}
		p.status[k] = &Status{Target: t, State: Unknown}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.run(ctx, t)
		}()
	}
}

func sameTarget(a, b Target) bool {
	if a.MainPID != b.MainPID || !a.Started.Equal(b.Started) || a.Identity != b.Identity || a.Object != b.Object {
		return false
	}
	return probeKey(a.Probe) == probeKey(b.Probe)
}

// probeKey is a comparable form of a probe.
func probeKey(pr desired.Probe) string {
	b, _ := json.Marshal(pr)
	return string(b)
}

// Status returns every probe's status, sorted by unit and kind.
func (p *Prober) Status() []Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Status, 0, len(p.status))
	for _, s := range p.status {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Unit != out[j].Unit {
			return out[i].Unit < out[j].Unit
		}
		return out[i].Kind < out[j].Kind
	})
	return out
}

func (p *Prober) run(ctx context.Context, t Target) {
	log := p.log.With(zap.String("unit", t.Unit), zap.String("probe", t.Kind))
	c, err := p.checker(t.Probe, t.Identity)
	if err != nil {
		// A probe the agent cannot build (an unknown user) says nothing
		// about the service: reported, never a liveness restart.
		log.Error("probe not started", zap.Error(err))
		p.update(ctx, t, func(s *Status) bool {
			s.CannotProbe, s.LastError = true, fmt.Errorf("%w: %w", ErrCannotProbe, err).Error()
			return true
		})
		return
	}
	tr := NewTracker(t.Probe.Failures, t.Probe.Successes)
	first := t.Started.Add(t.Probe.InitialDelay.D())
	if wait := first.Sub(p.now()); wait > 0 {
		if !sleep(ctx, wait) {
			return
		}
	}
	interval, timeout := t.Probe.Interval.D(), t.Probe.Timeout.D()
	for {
		// Attempts begin interval apart (an attempt that runs into its
		// timeout does not stretch the period), so a hung process fails
		// its liveness probe within failures × interval.
		begun := p.now()
		actx, cancel := context.WithTimeout(ctx, timeout)
		err := c.Check(actx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, ErrCannotProbe) {
			p.update(ctx, t, func(s *Status) bool {
				s.Attempts++
				first := !s.CannotProbe
				s.CannotProbe, s.LastError = true, err.Error()
				if first {
					log.Error("probe cannot run", zap.Error(err))
				}
				return first
			})
			if !sleep(ctx, max(begun.Add(interval).Sub(p.now()), 0)) {
				return
			}
			continue
		}
		state, changed := tr.Observe(err == nil)
		if changed {
			if state == Failing {
				log.Warn("probe failing", zap.Int("failures", tr.Failures()), zap.Error(err))
			} else {
				log.Info("probe passing")
			}
		}
		p.update(ctx, t, func(s *Status) bool {
			s.Attempts++
			wake := changed || s.CannotProbe
			s.CannotProbe = false
			s.State, s.Failures = state, tr.Failures()
			s.LastError = ""
			if err != nil {
				s.LastError = err.Error()
			}
			if changed {
				s.Since = p.now()
			}
			return wake
		})
		if !sleep(ctx, max(begun.Add(interval).Sub(p.now()), 0)) {
			return
		}
	}
}

// update applies f to t's status (if its loop is still the current one)
// and wakes the agent when f reports a change.
func (p *Prober) update(ctx context.Context, t Target, f func(*Status) bool) {
	p.mu.Lock()
	s, ok := p.status[t.key()]
	if !ok || ctx.Err() != nil || !sameTarget(s.Target, t) {
		p.mu.Unlock()
		return
	}
	changed := f(s)
	p.mu.Unlock()
	if changed {
		p.wake()
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// SetRunner makes exec probes run through r (nil: in the agent's process,
// with the service's user and group set on the child). Call before Run.
func (p *Prober) SetRunner(r Runner) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r == nil {
		p.checker = NewChecker
		return
	}
	p.checker = func(pr desired.Probe, id Identity) (Checker, error) {
		if len(pr.Exec) > 0 {
			return &runnerCheck{r: r, argv: pr.Exec, id: id}, nil
		}
		return NewChecker(pr, id)
	}
}
