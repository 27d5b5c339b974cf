package process

// Intents written for a whole batch of starts: see preIntents.

// preIntents writes the intent rows of a batch of starts (ApplyBatch) in
// one table write, before any of them is sent to its runner. It covers
// each named unit that is a loaded service with no table row (nothing of
// it runs, no automatic restart is pending) and nothing between its start
// and its main fork that could take long or fail (pre-start checks, a
// lock, a notify socket). Its runner then forks that launch (usePreIntent)
// instead of writing its own intent first. Before, a cold start of 100
// services wrote the table before every fork: writes one behind the other
// (tableMu), each a temp file, fsync and rename, that the forks waited
// for. It returns the launches written, for dropPreIntents.
func (s *Supervisor) preIntents(names []string) map[string]string {
	type launch struct {
		unit *unit
		rec  procRecord
	}
	var ls []launch
	for _, n := range names {
		s.mu.Lock()
		u := s.units[n]
		_, hasRow := s.table[n]
		s.mu.Unlock()
		if u == nil || hasRow {
			continue
		}
		spec, hash := u.current()
		if spec == nil || spec.Timer != nil || len(spec.PreStart) > 0 || spec.Lock != "" || spec.Type == TypeNotify {
			continue
		}
		// Started stays 0: the fork may come much later in the batch (behind
		// slow starts); a next agent that adopts the launch by this row
		// takes the process's own start time (resolveIntents).
		ls = append(ls, launch{u, s.launchRecord(n, "p", spec, hash, u.status().NRestarts)})
	}
	if len(ls) == 0 {
		return nil
	}
	written := map[string]string{}
	s.mu.Lock()
	for _, l := range ls {
		if _, ok := s.table[l.rec.Unit]; !ok { // a runner's own intent came first
			s.table[l.rec.Unit] = l.rec
			written[l.rec.Unit] = l.rec.Nonce
		}
	}
	s.mu.Unlock()
	s.saveTable()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tableDirty {
		// Not in the file: no runner may fork by them, and the next write
		// must not put them there.
		for n, nonce := range written {
			s.dropIntentLocked(n, nonce)
		}
		return nil
	}
	if s.pre == nil {
		s.pre = map[string]string{}
	}
	for n, nonce := range written {
		s.pre[n] = nonce
	}
	return written
}

// usePreIntent returns the launch preIntents wrote for this start, once:
// its row still in the table as written (an intent, same launch ID), for
// the spec, file and restart count this start runs. Otherwise nil, and the
// start writes its own intent.
func (r *runner) usePreIntent() *procRecord {
	s := r.u.s
	s.mu.Lock()
	defer s.mu.Unlock()
	nonce, ok := s.pre[r.u.name]
	if !ok {
		return nil
	}
	rec, ok := s.table[r.u.name]
	if !ok || rec.PID != 0 || rec.Nonce != nonce || s.tableDirty ||
		rec.SpecHash != r.hash || rec.ProcHash != procHash(r.spec) || rec.NRestarts != r.nextRestarts {
		return nil // left for dropPreIntents (or replaced by this start's own intent)
	}
	delete(s.pre, r.u.name) // taken
	return &rec
}

// dropPreIntents removes, after the batch, the rows preIntents wrote that
// no runner took (its start failed before it reached the fork): an intent
// names a launch that may run, and these never will. A runner that took
// its row and failed before the fork removed it itself (spawn).
func (s *Supervisor) dropPreIntents(written map[string]string) {
	if len(written) == 0 {
		return
	}
	dropped := false
	s.mu.Lock()
	for n, nonce := range written {
		if s.pre[n] != nonce {
			continue // taken
		}
		delete(s.pre, n)
		dropped = s.dropIntentLocked(n, nonce) || dropped
	}
	s.mu.Unlock()
	if dropped {
		s.saveTable()
	}
}

// dropIntentLocked removes the unit's row if it is still the intent of
// launch nonce (nothing forked by it); s.mu held.
func (s *Supervisor) dropIntentLocked(unit, nonce string) bool {
	if rec, ok := s.table[unit]; ok && rec.PID == 0 && rec.Nonce == nonce {
		delete(s.table, unit)
		return true
	}
	return false
}
