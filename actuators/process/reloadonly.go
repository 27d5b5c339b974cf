package process

// Which changes of a unit file its running process depends on.
//
// A running process depends on everything that shaped its start (command,
// identity, environment, working directory, checks, watchdog, logs, lock,
// type). The restart policy and start limit are consulted at the next exit
// or start, the stop timeout at the next stop: like systemd on
// daemon-reload, the supervisor applies them to the running unit at once
// (runner.reloadSpec), and the planner does not restart it for them
// (ClassifyChange). StaleProcess compares procHash, so a process is stale
// only when something it depends on changed.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sort"
)

// reloadOnlyFields are the Spec fields (JSON names) a running process does
// not depend on.
var reloadOnlyFields = map[string]bool{"restart": true, "stopTimeout": true, "object": true, "stopped": true}

// procHash hashes what a running process of spec depends on; "" for nil.
func procHash(spec *Spec) string {
	if spec == nil {
		return ""
	}
	c := *spec
	c.Restart, c.StopTimeout, c.Object, c.Stopped = nil, "", "", false
	b, err := json.Marshal(&c)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return "proc:" + hex.EncodeToString(sum[:12])
}

// fileProcHash is procHash of a unit file's spec ("" when it does not parse).
func fileProcHash(data []byte) string {
	spec, err := ParseUnitFile(data)
	if err != nil {
		return ""
	}
	return procHash(spec)
}

// ClassifyChange compares two process-backend unit files: restart says a
// running process depends on what changed; keys are the changed fields
// (JSON names; the process-affecting ones when restart), sorted. A file
// that does not parse counts as a restart of every field.
func ClassifyChange(old, cur []byte) (restart bool, keys []string) {
	if bytes.Equal(old, cur) {
		return false, nil
	}
	a, aerr := specFields(old)
	b, berr := specFields(cur)
	if aerr != nil || berr != nil {
		return true, []string{"unit file"}
	}
	var proc, reload []string
	seen := map[string]bool{}
	for _, m := range []map[string]json.RawMessage{a, b} {
		for k := range m {
			if seen[k] {
				continue
			}
			seen[k] = true
			if bytes.Equal(a[k], b[k]) {
				continue
			}
			if reloadOnlyFields[k] {
				if k != "object" {
					reload = append(reload, k)
				}
			} else {
				proc = append(proc, k)
			}
		}
	}
	sort.Strings(proc)
	sort.Strings(reload)
	if len(proc) > 0 {
		return true, proc
	}
	return false, reload
}

// specFields returns the top-level JSON fields of a unit file's spec.
func specFields(data []byte) (map[string]json.RawMessage, error) {
	if _, err := ParseUnitFile(data); err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	i := bytes.IndexByte(data, '{')
	if err := json.Unmarshal(data[i:], &m); err != nil {
		return nil, err
	}
	for k, v := range m {
		var buf bytes.Buffer
		if json.Compact(&buf, v) == nil {
			m[k] = buf.Bytes()
		}
	}
	return m, nil
}

// reloadSpec applies a reloaded unit file to the running unit when its
// process does not depend on what changed (restart policy, start limit,
// stop timeout): the unit's spec becomes the new one, and the running
// process counts as started from the new file, in the status and the
// process table. Anything else waits for the next start (the planner
// restarts the unit). Also called after adoption, when the file loaded at
// start is newer than the adopted process's.
func (r *runner) reloadSpec() {
	spec, hash := r.u.current()
	if spec == nil || r.spec == nil {
		return
	}
	if hash != r.hash && procHash(spec) == procHash(r.spec) {
		r.spec, r.hash = spec, hash
		if r.tracker != nil && spec.Restart != nil {
			r.tracker.SetSpec(*spec.Restart)
		}
	}
	if r.proc == nil || r.isCheck {
		return
	}
	rec := r.proc.rec
	if rec.ProcHash == "" || rec.ProcHash != procHash(spec) || rec.SpecHash == hash {
		return
	}
	r.proc.rec.SpecHash = hash
	rec.SpecHash = hash
	r.u.s.updateRecord(r.u.name, rec.PID, func(cur *procRecord) {
		cur.SpecHash = hash
		if cur.Next != nil {
			// The reserved restart runs the new file too (a copy: rows
			// share the pointer).
			nx := *cur.Next
			nx.SpecHash = hash
			cur.Next = &nx
		}
	})
	r.u.update(func(st *status) {
		if st.MainPID == rec.PID {
			st.SpecHash = hash
		}
	})
}
