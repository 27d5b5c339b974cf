package observed

// OwnChange is what one of the agent's own operations changed in the unit
// directory or in systemd's view of the unit files (a write, a removal, an
// enable or disable, a daemon-reload). The systemd applier reports it to
// the observer, whose watch tells the agent's changes from an operator's:
// the agent's own wake no pass (one pass per edit).
type OwnChange struct {
	// Paths are the files the operation wrote or removed; a directory
	// stands for everything below it.
	Paths []string
	// Links are the dependency symlinks the operation made or removed,
	// as systemd reported them (EnableUnitFiles, DisableUnitFiles).
	Links []Link
	// Signal is the manager signal systemd sent for the operation, if
	// any: "UnitFilesChanged" (an enable or disable that made or removed
	// a link) or "Reloading" (a daemon-reload that ran).
	Signal string
}

// Link is a symlink at Path, made pointing to Dest, or removed (Dest "").
type Link struct{ Path, Dest string }
