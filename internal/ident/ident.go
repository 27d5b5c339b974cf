// Package ident resolves a unit's user and group (spec.user, spec.group: a
// name or a numeric ID) to the credential a child process runs with. The
// process backend's spawner and the health prober's exec probes share it.
package ident

import (
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
			if u, err = user.LookupId(userName); err != nil {
				return r, fmt.Errorf("look up user %q: %w", userName, err)
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
			if g, err = user.LookupGroupId(groupName); err != nil {
				return r, fmt.Errorf("look up group %q: %w", groupName, err)
			}
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	r.Cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}
	return r, nil
}
