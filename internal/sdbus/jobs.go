package sdbus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
)

// Job is one start, stop or restart job for RunJobsContext.
type Job struct {
	Method string // StartUnit, StopUnit or RestartUnit
	Unit   string
	Mode   string // replace, fail, ...
	// MainStartBefore asks for the service's ExecMainStartTimestamp (µs)
	// as it was just before the job was queued (JobResult.MainStart): a
	// restart's check that the main process started anew. Where the job
	// goes by hand (the private socket), the property's Get is written
	// with the job's call and answered first (systemd answers one
	// connection's calls in order): no round trip of its own. Through
	// go-systemd it is read just before the call. The job is queued
	// whether or not the read succeeds.
	MainStartBefore bool
}

// JobResult is what became of one Job.
type JobResult struct {
	// ID is systemd's job id; 0 when the job was not queued.
	ID int
	// Err is the queueing call's error (the job was not queued).
	Err error
	// Result is JobRemoved's result (done, failed, canceled, timeout,
	// dependency, skipped); "" when the job had not finished when the
	// wait ended (timeout, ctx).
	Result string
	// MainStart is the ExecMainStartTimestamp read before the job when
	// Job.MainStartBefore asked for it; MainStartErr is why it could not
	// be read (MainStart is then 0).
	MainStart    uint64
	MainStartErr error
}

// jobCall is one call RunJobsContext writes for a batch: a job's call, or
// the Get of its MainStartBefore written just before it.
type jobCall struct {
	job int  // index in the batch
	get bool // the MainStartBefore read
}

// Where a job's MainStartBefore is read from.
const (
	serviceIface  = "org.freedesktop.systemd1.Service"
	mainStartProp = "ExecMainStartTimestamp"
)

// appendJobCalls appends the calls of jobs to b, in order, each job's
// MainStartBefore Get just before its call, and returns what each is.
func (p *pipe) appendJobCalls(b []byte, jobs []Job) ([]byte, []jobCall) {
	calls := make([]jobCall, 0, len(jobs))
	for i, j := range jobs {
		if j.MainStartBefore {
			path := godbus.ObjectPath(unitPathPrefix + sddbus.PathBusEscape(j.Unit))
			b = p.appendCall(b, path, propsIface, "Get", systemdDest, serviceIface, mainStartProp)
			calls = append(calls, jobCall{job: i, get: true})
		}
		b = p.appendCall(b, systemdPath, managerIface, j.Method, systemdDest, j.Unit, j.Mode)
		calls = append(calls, jobCall{job: i})
	}
	return b, calls
}

// setMainStart records in r the reply m (or err) of unit's MainStartBefore
// Get.
func setMainStart(r *JobResult, unit string, m message, err error) {
	if err == nil {
		var v any
		if v, err = getReplyValue(m, serviceIface, mainStartProp); err == nil {
			var ok bool
			if r.MainStart, ok = v.(uint64); !ok {
				err = fmt.Errorf("get %s: value %T, want uint64", mainStartProp, v)
			}
		}
	}
	if err != nil {
		r.MainStart, r.MainStartErr = 0, mainStartUnread(unit, err)
	}
}

// mainStartUnread is the MainStartErr of a job whose read failed with err.
func mainStartUnread(unit string, err error) error {
	return fmt.Errorf("read %s of %s before the job: %w", mainStartProp, unit, err)
}

// UnitTypePropertyGetter reads one property of a unit's type interface
// (Conn and sdbustest.Fake).
type UnitTypePropertyGetter interface {
	GetUnitTypePropertyContext(ctx context.Context, unit, unitType, name string) (*sddbus.Property, error)
}

// MainStart reads a service's ExecMainStartTimestamp (µs; 0 if it never
// ran) through g.
func MainStart(ctx context.Context, g UnitTypePropertyGetter, unit string) (uint64, error) {
	p, err := g.GetUnitTypePropertyContext(ctx, unit, "Service", mainStartProp)
	if err != nil {
		return 0, err
	}
	v, ok := p.Value.Value().(uint64)
	if !ok {
		return 0, fmt.Errorf("get %s of %s: value %s, want uint64", mainStartProp, unit, p.Value.Signature())
	}
	return v, nil
}

// The job methods RunJobsContext takes.
const (
	MethodStartUnit   = "StartUnit"
	MethodStopUnit    = "StopUnit"
	MethodRestartUnit = "RestartUnit"
)

// RunJobsContext queues every job, in order, without waiting for any, then
// waits until each queued job has finished (its JobRemoved), timeout has
// passed since the last was queued, or ctx is done, and returns one
// JobResult per job. A job unfinished when the wait ends has Result "".
//
// On systemd's private socket the calls and the wait go over the property
// pipe (pipe.go), which reads the signals systemd sends every peer of that
// socket by their headers and decodes only the JobRemoved ones. Through
// go-systemd, each job's reply and result would wait behind the decoding
// of every signal queued before it on its connection: after a
// daemon-reload of 1000 units, over 2000 (about 25 µs each). On a bus
// (where a peer gets no signal it did not ask for) it uses go-systemd's
// job calls, as does any address the pipe does not dial. While a watch
// runs they go on its connection (watch.go); right after a command's
// reload through the bus daemon, a batch of at most busJobsMax goes on
// that bus connection (busreload.go).
//
// Outcomes:
//   - (results, nil): every job queued or refused (Err: refused, or not
//     sent at all); Result says how each queued one ended, or "" if it
//     had not by the end of the wait.
//   - (results, err): the connection failed, or ctx ended, during the
//     wait; results holds what was learned before.
func (c *Conn) RunJobsContext(ctx context.Context, jobs []Job, timeout time.Duration) ([]JobResult, error) {
	if len(jobs) == 0 {
		return nil, nil
	}
	if !c.private {
		return c.runJobsGodbus(ctx, jobs, timeout)
	}
	if w := c.watching(); w != nil {
		res, err := c.runJobsOnWatch(ctx, w, jobs, timeout) // watch.go
		if !errors.Is(err, errWatchClosed) || res != nil {
			return res, err
		}
		// The watch's connection ended before anything was sent: the pipe.
	}
	if res, ok, err := c.runJobsOnBus(ctx, jobs, timeout); ok { // busreload.go
		return res, err
	}
	p, err := c.takePipe(ctx)
	if errors.Is(err, errPipeAddress) {
		return c.runJobsGodbus(ctx, jobs, timeout)
	}
	if err != nil {
		return notQueued(len(jobs), err), nil
	}
	res, clean, err := p.runJobs(ctx, jobs, timeout)
	c.putPipe(p, clean)
	return res, err
}

// notQueued is the results of n jobs none of which was queued: err each.
func notQueued(n int, err error) []JobResult {
	res := make([]JobResult, n)
	for i := range res {
		res[i].Err = err
	}
	return res
}

// runJobs is RunJobsContext on p. clean reports whether p may be kept (no
// message left half read).
func (p *pipe) runJobs(ctx context.Context, jobs []Job, timeout time.Duration) (res []JobResult, clean bool, err error) {
	res = make([]JobResult, len(jobs))
	stop := p.bound(ctx)
	defer stop()
	first := p.serial + 1
	var calls []jobCall
	p.wbuf, calls = p.appendJobCalls(p.wbuf[:0], jobs)
	p.wire.calls.Add(uint64(len(calls)))
	if _, err := p.conn.Write(p.wbuf); err != nil {
		return notQueued(len(jobs), err), false, nil
	}
	byPath := make(map[string]int, len(jobs)) // job object path → index
	removed := map[string]string{}            // JobRemoved seen before its reply
	replies, waiting := 0, 0
	var deadline time.Time
	for replies < len(calls) || waiting > 0 {
		m, err := p.read()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if cerr := ctx.Err(); cerr != nil {
					return res, false, cerr
				}
				if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
					return res, false, context.DeadlineExceeded // before ctx's own timer said so
				}
				if replies == len(calls) {
					return res, false, nil // the job timeout: unfinished jobs keep Result ""
				}
			}
			return res, false, fmt.Errorf("wait for jobs: %w", err)
		}
		switch m.typ {
		case msgMethodReturn, msgError:
			if m.replySerial-first >= uint32(len(calls)) {
				continue // not a reply of this batch
			}
			replies++
			c := calls[m.replySerial-first]
			i := c.job
			var rerr error
			if m.typ == msgError {
				rerr = godbus.Error{Name: m.errName, Body: m.errBody}
			}
			if c.get {
				setMainStart(&res[i], jobs[i].Unit, m, rerr)
				break
			}
			if rerr != nil {
				res[i].Err = rerr
				break
			}
			path, err := jobReply(m, jobs[i])
			if err != nil {
				res[i].Err = err
				break
			}
			res[i].ID = jobID(path)
			if r, ok := removed[path]; ok {
				res[i].Result = r
				delete(removed, path)
				break
			}
			byPath[path] = i
			waiting++
		case msgSignal:
			if m.member != "JobRemoved" || m.iface != managerIface || m.sig != "uoss" {
				continue
			}
			d := decoder{b: m.body, order: m.order}
			d.uint32()
			path, _, result := d.string(), d.string(), d.string()
			if d.err != nil {
				continue
			}
			if i, ok := byPath[path]; ok {
				res[i].Result = result
				delete(byPath, path)
				waiting--
			} else if replies < len(calls) {
				removed[path] = result
			}
		}
		if replies == len(calls) && deadline.IsZero() {
			// Every job queued: the timeout runs from here, as it did
			// for the calls one by one.
			deadline = time.Now().Add(timeout)
			if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
				deadline = d
			}
			_ = p.conn.SetReadDeadline(deadline)
			if ctx.Err() != nil { // cancelled meanwhile: bound's deadline was just overwritten
				_ = p.conn.SetDeadline(time.Unix(1, 0))
			}
		}
	}
	return res, true, nil
}

// jobReply returns the job object path a job call's reply m holds.
func jobReply(m message, j Job) (string, error) {
	d := decoder{b: m.body, order: m.order}
	path := d.string()
	if d.err != nil || m.sig != "o" {
		return "", fmt.Errorf("%s %s: reply of signature %q", j.Method, j.Unit, m.sig)
	}
	return path, nil
}

// jobID is the number at the end of a job's object path (0 if none).
func jobID(path string) int {
	n, _ := strconv.Atoi(path[strings.LastIndexByte(path, '/')+1:])
	return n
}

// runJobsGodbus is RunJobsContext through go-systemd.
func (c *Conn) runJobsGodbus(ctx context.Context, jobs []Job, timeout time.Duration) ([]JobResult, error) {
	return RunJobsWith(ctx, jobs, timeout, c, func(ctx context.Context, j Job, ch chan<- string) (int, error) {
		switch j.Method {
		case MethodStartUnit:
			return c.StartUnitContext(ctx, j.Unit, j.Mode, ch)
		case MethodStopUnit:
			return c.StopUnitContext(ctx, j.Unit, j.Mode, ch)
		case MethodRestartUnit:
			return c.RestartUnitContext(ctx, j.Unit, j.Mode, ch)
		}
		return 0, fmt.Errorf("%s %s: %w", j.Method, j.Unit, errJobMethod)
	})
}

var errJobMethod = errors.New("not a job method")

// RunJobsWith is RunJobsContext over go-systemd-style job calls (call
// queues one job and sends its result on ch once it finishes): each job is
// queued in order, its MainStartBefore read through props just before
// (MainStart), then each result awaited under one timeout. sdbustest's
// Fake uses it too.
func RunJobsWith(ctx context.Context, jobs []Job, timeout time.Duration, props UnitTypePropertyGetter,
	call func(ctx context.Context, j Job, ch chan<- string) (int, error)) ([]JobResult, error) {
	res := make([]JobResult, len(jobs))
	chans := make([]chan string, len(jobs))
	for i, j := range jobs {
		if j.MainStartBefore {
			var err error
			if res[i].MainStart, err = MainStart(ctx, props, j.Unit); err != nil {
				res[i].MainStart, res[i].MainStartErr = 0, mainStartUnread(j.Unit, err)
			}
		}
		// Buffered to 1: go-systemd sends the result while holding its
		// job lock, so a result nobody waits for any more (timeout,
		// ctx) must not block its signal dispatcher.
		chans[i] = make(chan string, 1)
		res[i].ID, res[i].Err = call(ctx, j, chans[i])
	}
	results := make([]<-chan string, len(chans))
	for i, ch := range chans {
		results[i] = ch
	}
	return res, awaitJobs(ctx, res, results, timeout)
}

// awaitJobs sets res[i].Result from results[i] for every job queued (Err
// nil), in order, until each result came, timeout passed (the rest keep
// Result "", those already in are taken) or ctx is done (its error). A
// closed channel (the connection ended) ends the wait with an error.
func awaitJobs(ctx context.Context, res []JobResult, results []<-chan string, timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	expired := false
	for i, ch := range results {
		if res[i].Err != nil {
			continue
		}
		if !expired {
			select {
			case r, ok := <-ch:
				if !ok {
					return fmt.Errorf("wait for jobs: %w", errWatchClosed)
				}
				res[i].Result = r
				continue
			case <-ctx.Done():
				return ctx.Err()
			case <-timer.C:
				expired = true
			}
		}
		select {
		case r := <-ch:
			res[i].Result = r
		default:
		}
	}
	return nil
}
