// Package desired turns a directory of resil.dev/v1 manifests into the
// desired state of a host, and renders each object into systemd unit files.
//
// Level-triggered, as kubelet's file source: Load always reads the whole
// directory and returns the full Set; Watch only wakes the caller (it calls
// wake, the caller then Loads). One bad file never hides the good ones:
// Set.Broken, Set.Busy (open for writing) and Set.Empty (no document) name
// the files whose objects must keep their last good desired state.
//
// Files, in the order a load goes through them:
//
//	load.go        Load, Options, Set: one pass over the directory
//	load_parallel.go  the manifests read in order, parsed on several cores
//	cache.go       FileCache: unchanged files answered without parsing (the agent)
//	cache_file.go  the FileCache kept in a file from one command to the next
//	               (no library fits: it is the loader's own memory, decoded
//	               the way the loader decodes)
//	files.go       which entries are manifests; safe file names
//	open_unix.go   the only place that opens files: openat walk, owner and
//	               mode checks on the descriptor read, symlink policy
//	lease_*.go     read leases: is a writer still holding the file?
//	yaml.go        YAML documents to JSON, keeping node positions for
//	               file:line:column errors
//	decode.go      strict decoding: header, type errors, unknown fields
//	types_check.go every type error of a document, not only the first
//	dropin.go      NAME.d/*.yaml merged onto an object (JSON merge patch)
//	validate.go    per-object rules: what systemd or the kernel would refuse,
//	               and anything that could inject into a unit file
//	directives.go  the systemd: passthrough's directives and values, as
//	               systemd parses them; directives_gen.go (go generate:
//	               gen_directives.go) is systemd's own list per section
//	crosscheck.go  what only the whole set tells: duplicates, references,
//	               orphan drop-in folders, one Watchdog per host
//	settle.go      busy and empty files (Set.Unsettled)
//	hosts.go       host labels and selectors
//	types.go       the manifest schema; errors.go FieldError and paths
//	document.go    an object's merged JSON, and DecodeObject to rebuild it
//	render.go      unit files, via go-systemd's unit.Serialize (quoting of
//	               command lines and environment written here)
//	watch.go       Watch: inotify on directories, wake once a write settled
//	calendar_wire.go  OnCalendar validation by the calendar subpackage
//	health.go      spec.health: probe types, defaults, validation;
//	               render_health.go: the startup probe's ExecStartPost=
package desired
