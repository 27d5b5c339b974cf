package process

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"resil.dev/resil/actuators"
	"resil.dev/resil/desired"
)

// escapeAllow is every spec.systemd directive the process backend honours,
// by section. Anything else is refused: a manifest must never run with less
// isolation than it asks for, so a directive the supervisor cannot apply
// (NoNewPrivileges=, ProtectSystem=, ExecStartPre=, LimitNOFILE=, ...) stops
// the object instead of being dropped.
//
//	Unit.Description, Unit.Documentation    text only
//	Unit.After, Unit.Before, Unit.Wants     ordering and weak wants: no effect
//	                                        (every unit starts on its own)
//	Service.User, Service.Group             the setuid/setgid of spec.user/group
//	Service.WorkingDirectory                absolute path, as spec.workingDirectory
//	Install.WantedBy                        the enable marker, as spec.wantedBy
var escapeAllow = map[string]map[string]bool{
	"Unit":    {"Description": true, "Documentation": true, "After": true, "Before": true, "Wants": true},
	"Service": {"User": true, "Group": true, "WorkingDirectory": true},
	"Install": {"WantedBy": true},
}

// escape is what the escape hatch maps onto a Spec (later wins, as the
// directives are appended last in a systemd unit).
type escape struct {
	user, group, wd string
}

func (e escape) apply(s *Spec) *Spec {
	if e.user != "" {
		s.User = e.user
	}
	if e.group != "" {
		s.Group = e.group
	}
	if e.wd != "" {
		s.WorkingDirectory = e.wd
	}
	return s
}

// supported checks that the process backend can honour everything o asks
// for, and returns what its escape hatch maps onto the spec. The error
// wraps actuators.ErrUnsupported and names every refused field and
// directive. Refused:
//
//   - spec.requires: a hard dependency the supervisor does not enforce
//   - spec.resources (memoryMax, cpuQuota, tasksMax): cgroup limits
//   - spec.stateDirectory: not created here
//   - spec.systemd directives outside escapeAllow, and empty values of
//     allowed ones (User= empty would reset to root)
//
// after and wants are ordering and weak dependencies; units here start on
// their own, so they have no effect and are accepted.
func supported(o *desired.Object) (escape, error) {
	var why []actuators.Refusal
	refuse := func(field, reason string) { why = append(why, actuators.Refusal{Field: field, Reason: reason}) }
	var hatch map[string]map[string]string
	switch o.Kind {
	case desired.KindService:
		s := o.Service
		if s == nil {
			return escape{}, nil
		}
		if len(s.Requires) > 0 {
			refuse("spec.requires", "hard dependencies are not enforced")
		}
		if r := s.Resources; r != nil {
			if r.MemoryMax != "" {
				refuse("spec.resources.memoryMax", "no cgroup limits")
			}
			if r.CPUQuota != "" {
				refuse("spec.resources.cpuQuota", "no cgroup limits")
			}
			if r.TasksMax != 0 {
				refuse("spec.resources.tasksMax", "no cgroup limits")
			}
		}
		if s.StateDirectory != "" {
			refuse("spec.stateDirectory", "not created by this backend")
		}
		hatch = s.Systemd
	case desired.KindTimer:
		if o.Timer != nil {
			hatch = o.Timer.Systemd
		}
	}
	var e escape
	for _, sec := range sortedKeys(hatch) {
		for _, k := range sortedKeys(hatch[sec]) {
			v := hatch[sec][k]
			field := "spec.systemd." + sec + "." + k
			if !escapeAllow[sec][k] {
				refuse(field, "directive not supported")
				continue
			}
			if strings.TrimSpace(v) == "" {
				refuse(field, "an empty value resets the setting")
				continue
			}
			switch sec + "." + k {
			case "Service.User":
				e.user = v
			case "Service.Group":
				e.group = v
			case "Service.WorkingDirectory":
				if !filepath.IsAbs(v) || filepath.Clean(v) != v {
					refuse(field, fmt.Sprintf("%q is not a clean absolute path; no '-' or '~' forms", v))
					continue
				}
				e.wd = v
			}
		}
	}
	if o.Kind == desired.KindTimer && o.Timer != nil && o.Timer.Service != "" && (e.user != "" || e.group != "" || e.wd != "") {
		// Only an inline job has a Service section (validation refuses it
		// otherwise); nothing to map it onto here.
		refuse("spec.systemd.Service", "only for an inline command")
	}
	if len(why) > 0 {
		return escape{}, &unsupportedError{id: o.ID(), why: why}
	}
	return e, nil
}

// unsupportedError is supported's refusal; it wraps actuators.ErrUnsupported.
type unsupportedError struct {
	id  string
	why []actuators.Refusal
}

// Refused names the refused fields (actuators.Refusals).
func (e *unsupportedError) Refused() []actuators.Refusal { return e.why }

func (e *unsupportedError) Error() string {
	parts := make([]string, len(e.why))
	for i, r := range e.why {
		parts[i] = r.Field + " (" + r.Reason + ")"
	}
	return fmt.Sprintf("the process backend cannot honour %s: %s", e.id, strings.Join(parts, ", "))
}

func (e *unsupportedError) Unwrap() error { return actuators.ErrUnsupported }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
