package process

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// sd_notify: NOTIFY_SOCKET is a unixgram socket with SO_PASSCRED, so each
// datagram carries the sender's PID; WATCHDOG_USEC is set like systemd does
// (WATCHDOG_PID is not: the PID is unknown before fork, and sd_watchdog_enabled
// accepts its absence). A notify service is started on READY=1; WATCHDOG=1
// re-arms the watchdog; on expiry the group gets SIGABRT, then SIGKILL after
// the stop timeout, Result is "watchdog" and the restart policy applies.
// BARRIER=1 file descriptors are closed at once, so systemd-notify(1) never
// waits on us.
//
// NotifyAccess=main accepts only datagrams from the main PID, all accepts any
// process of the main process's group (a sender that already exited cannot
// be checked and is accepted). systemd-notify(1) (systemd 252, as here) sends
// READY=1/WATCHDOG=1 with its parent's PID in the credentials when it may
// (as root), so a shell that is itself the main process works under main;
// anything else - a non-root shell worker, a helper process, systemd-notify
// run from a subshell - needs NotifyAccess=all. That is the same on systemd
// and here, so a manifest means the same on both backends; for shell workers,
// use notifyAccess: all.

// notifyMsg is one parsed sd_notify datagram.
type notifyMsg struct {
	Ready    bool
	Stopping bool
	Watchdog bool
	// WatchdogTrigger is WATCHDOG=trigger: fail now as if the watchdog fired.
	WatchdogTrigger bool
	// Status is STATUS=... (nil when absent).
	Status *string
	// WatchdogUSec is WATCHDOG_USEC=... (0 when absent): a new timeout.
	WatchdogUSec uint64
	// MainPID is MAINPID=... (0 when absent).
	MainPID int
	// Sender is the PID from SCM_CREDENTIALS (0 when unknown).
	Sender int
}

// parseNotify parses the sd_notify wire format: newline-separated
// KEY=VALUE assignments; unknown keys are ignored, like systemd does. A
// datagram with a line that is not an assignment is rejected whole.
func parseNotify(b []byte) (notifyMsg, error) {
	var m notifyMsg
	for _, line := range bytes.Split(b, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		k, v, ok := bytes.Cut(line, []byte("="))
		if !ok || len(k) == 0 {
			return notifyMsg{}, fmt.Errorf("notify: line %q is not KEY=VALUE", line)
		}
		switch string(k) {
		case "READY":
			m.Ready = string(v) == "1"
		case "STOPPING":
			m.Stopping = string(v) == "1"
		case "WATCHDOG":
			switch string(v) {
			case "1":
				m.Watchdog = true
			case "trigger":
				m.WatchdogTrigger = true
			}
		case "STATUS":
			s := string(v)
			m.Status = &s
		case "WATCHDOG_USEC":
			n, err := strconv.ParseUint(string(v), 10, 64)
			if err != nil {
				return notifyMsg{}, fmt.Errorf("notify: WATCHDOG_USEC=%q: %w", v, err)
			}
			m.WatchdogUSec = n
		case "MAINPID":
			n, err := strconv.Atoi(string(v))
			if err != nil || n <= 0 {
				return notifyMsg{}, fmt.Errorf("notify: MAINPID=%q is not a PID", v)
			}
			m.MainPID = n
		}
	}
	return m, nil
}

// notifySocket is the NOTIFY_SOCKET of one service: a unixgram socket with
// SO_PASSCRED, so every datagram carries the sender's PID.
type notifySocket struct {
	path string
	conn *net.UnixConn
}

// listenNotify binds path afresh (an old socket file is removed) and enables
// SO_PASSCRED. uid/gid own the socket so a service running as another user
// can send to it (-1: leave as is).
func listenNotify(path string, uid, gid int) (*notifySocket, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove old notify socket: %w", err)
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("listen notify socket: %w", err)
	}
	rc, err := conn.SyscallConn()
	if err == nil {
		cerr := rc.Control(func(fd uintptr) {
			err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
		})
		if cerr != nil {
			err = cerr
		}
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("set SO_PASSCRED: %w", err)
	}
	if uid >= 0 {
		if err := os.Chown(path, uid, gid); err != nil {
			conn.Close()
			return nil, fmt.Errorf("chown notify socket: %w", err)
		}
	}
	if err := os.Chmod(path, 0o660); err != nil {
		conn.Close()
		return nil, fmt.Errorf("chmod notify socket: %w", err)
	}
	return &notifySocket{path: path, conn: conn}, nil
}

// serve reads datagrams until the socket is closed, sending each parsed
// message to out. It returns when ctx is done or the socket fails.
func (n *notifySocket) serve(ctx context.Context, out chan<- notifyMsg) {
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(4*16))
	for {
		nb, noob, _, _, err := n.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		sender := readControl(oob[:noob])
		m, err := parseNotify(buf[:nb])
		if err != nil {
			continue
		}
		m.Sender = sender
		select {
		case out <- m:
		case <-ctx.Done():
			return
		}
	}
}

func (n *notifySocket) close() { n.conn.Close() }

// readControl returns the sender PID from SCM_CREDENTIALS and closes any
// file descriptors passed along: systemd-notify(1) sends BARRIER=1 with a
// pipe and waits until the manager closed it.
func readControl(oob []byte) (pid int) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for _, m := range msgs {
		if m.Header.Level != syscall.SOL_SOCKET {
			continue
		}
		switch m.Header.Type {
		case syscall.SCM_CREDENTIALS:
			if c, err := unix.ParseUnixCredentials(&m); err == nil {
				pid = int(c.Pid)
			}
		case syscall.SCM_RIGHTS:
			if fds, err := unix.ParseUnixRights(&m); err == nil {
				for _, fd := range fds {
					unix.Close(fd)
				}
			}
		}
	}
	return pid
}
