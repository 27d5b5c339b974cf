// Package ident resolves a unit's user and group (spec.user, spec.group: a
// name or a numeric ID) to the credential a child process runs with. The
// process backend's spawner and the health prober's exec probes share it.
package ident

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// Resolved is a resolved user/group.
type Resolved struct {
	// Cred is nil when neither a user nor a group was given (the
	// caller's own identity).
	Cred *syscall.Credential
	// User is the user's entry (nil without a user).
	User *user.User
}

// ErrUser and ErrGroup mark a user or group Resolve cannot find (systemd's
// exit statuses 217/USER and 216/GROUP).
var (
	ErrUser  = errors.New("no such user")
	ErrGroup = errors.New("no such group")
)

// lookupErr is the error of looking name up by name, then by ID: the ID
// lookup's when name is a number, else the name lookup's ("unknown user
// x", not strconv's complaint about x as a number).
func lookupErr(kind string, sentinel error, name string, byName, byID error) error {
	err := byName
	if _, nerr := strconv.Atoi(name); nerr == nil {
		err = byID
	}
	return fmt.Errorf("look up %s %q: %w: %w", kind, name, sentinel, err)
}

// Resolve looks userName and groupName up (names first, then IDs). The
// user's supplementary groups come with it; a group overrides the user's
// primary group. Unset parts keep the caller's own IDs.
func Resolve(userName, groupName string) (Resolved, error) {
	var r Resolved
	if userName == "" && groupName == "" {
		return r, nil
	}
	uid, gid := os.Getuid(), os.Getgid()
	var groups []uint32
	if userName != "" {
		u, err := user.Lookup(userName)
		if err != nil {
			var idErr error
			if u, idErr = user.LookupId(userName); idErr != nil {
				return r, lookupErr("user", ErrUser, userName, err, idErr)
			}
		}
		r.User = u
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		if gids, err := u.GroupIds(); err == nil {
			for _, g := range gids {
				if n, err := strconv.Atoi(g); err == nil {
					groups = append(groups, uint32(n))
				}
			}
		}
	}
	if groupName != "" {
		g, err := user.LookupGroup(groupName)
		if err != nil {
			var idErr error
			if g, idErr = user.LookupGroupId(groupName); idErr != nil {
				return r, lookupErr("group", ErrGroup, groupName, err, idErr)
			}
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	r.Cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}
	return r, nil
}
