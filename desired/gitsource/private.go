package gitsource

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"resil.dev/resil/desired"
)

// privateDir, in the source's directory (or in diff --revision's temp
// dir), holds the agent's own copies of the files git and ssh read
// themselves: the allowed-signers file, the deploy key, known_hosts and
// the token.
const privateDir = "private"

// Names of the private copies.
const (
	privSigners    = "allowed_signers"
	privSSHKey     = "ssh_key"
	privKnownHosts = "known_hosts"
	privToken      = "token"
)

// privateFiles are the configured files git and ssh read, as copies the
// agent wrote.
type privateFiles struct {
	// signers is the copy of the allowed-signers file ("" when none).
	signers string
	// signersHash identifies the signers' contents ("" when none): a head
	// refused under one list is verified again under another.
	signersHash string
	creds       Credentials
}

// privateCopies reads the allowed-signers file and the credential files
// through the manifests' checked walk (desired.ReadChecked with opts: the
// file, its folder and every directory above them must be the manifests
// owner's (root's) and not writable by group or others, checked on the
// descriptor read) and writes each into dir/private (0700) as a 0600 file
// of the agent's (temp file, fsync, rename; only when its bytes changed).
// git and ssh are then given the copies, never the originals.
//
// Why copies and not a check before each git run: git, ssh-keygen (git
// verify-commit) and ssh open these files by path, after the check and
// out of the agent's hands; a file swapped in between (a rename into a
// directory a user may write, a symlink) would be read unchecked. A copy
// holds exactly the bytes that were checked, in a directory no one else
// may write. A copy no longer configured is removed (a token does not
// linger).
//
// Outcomes: (files, nil) when every configured file was read and copied;
// (zero, err) naming the file (and its flag) and why when one is
// missing, refused, busy or unreadable, or its copy could not be written.
func privateCopies(dir, signers string, c Credentials, opts desired.Options) (privateFiles, error) {
	priv := filepath.Join(dir, privateDir)
	if err := privateDirectory(priv); err != nil {
		return privateFiles{}, err
	}
	var out privateFiles
	for _, f := range []struct {
		flag, src, name string
		dst             *string
	}{
		{"--verify-signers", signers, privSigners, &out.signers},
		{"--ssh-key", c.SSHKey, privSSHKey, &out.creds.SSHKey},
		{"--ssh-known-hosts", c.SSHKnownHosts, privKnownHosts, &out.creds.SSHKnownHosts},
		{"--token-file", c.TokenFile, privToken, &out.creds.TokenFile},
	} {
		dst := filepath.Join(priv, f.name)
		if f.src == "" {
			if err := os.Remove(dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return privateFiles{}, fmt.Errorf("private copy %s: %w", dst, err)
			}
			continue
		}
		b, err := desired.ReadChecked(f.src, opts)
		if err != nil {
			return privateFiles{}, fmt.Errorf("%s: %w", f.flag, err)
		}
		if old, err := os.ReadFile(dst); err != nil || !bytes.Equal(old, b) {
			if err := writeFileAtomicMode(dst, b, 0o600); err != nil {
				return privateFiles{}, fmt.Errorf("%s: private copy %s: %w", f.flag, dst, err)
			}
		}
		*f.dst = dst
		if f.name == privSigners {
			sum := sha256.Sum256(b)
			out.signersHash = "-signers-" + hex.EncodeToString(sum[:8])
		}
	}
	return out, nil
}

// privateDirectory creates dir (0700), or checks that the one there is a
// directory (not a symlink) and makes it 0700.
func privateDirectory(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("private directory: %w", err)
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("private directory: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("private directory %s: not a directory", dir)
	}
	if st.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("private directory: %w", err)
		}
	}
	return nil
}
