package redisclient

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// SendOnce marks a command go-redis must not send again after a failure.
//
// go-redis resends a command whose connection broke or timed out
// (MaxRetries on one node, and within MaxRedirects on a Cluster, the loop
// that also follows MOVED and ASK and cannot be turned off alone), and it
// cannot tell whether Redis ran the command before the connection broke. A
// command whose connection broke after Redis ran it must never run twice:
// a rate-limit script would take from (or return to) a bucket twice,
// counting a request twice or handing a lease out twice, and a session
// store write would find its own lock (SET NX) taken or apply an update
// twice. A command that fails fails once, and the caller's fallback
// (on_error, the breakers) takes over. A command never written (a refused
// dial, an empty pool) is not resent either: the next command dials again.
// Cluster redirections (MOVED, ASK) are still followed: Redis did not run
// the command on the node that redirected it. A pipeline holding a
// SendOnce command is not resent either, so part of it cannot run twice.
type SendOnce struct{ redis.Cmder }

// NoRetry tells go-redis not to resend the command.
func (SendOnce) NoRetry() bool { return true }

// Scripter is the part of a go-redis client that runs scripts; every
// go-redis client (single node, Cluster, Sentinel) satisfies it. Scripts go
// through Process so that they can be sent as SendOnce.
type Scripter interface {
	Process(ctx context.Context, cmd redis.Cmder) error
	ScriptLoad(ctx context.Context, script string) *redis.StringCmd
}

// NoScriptRounds bounds how often one script call loads the script again
// after NOSCRIPT before giving up with the error: another flush can land
// between the load and the resend, but not forever.
const NoScriptRounds = 3

// IsNoScript reports whether err is Redis answering NOSCRIPT: it has not
// got the script (restarted, flushed, a new Cluster master) and did not
// run it, so sending it again after SCRIPT LOAD cannot run it twice.
func IsNoScript(err error) bool { return redis.HasErrorPrefix(err, "NOSCRIPT") }

// Script is a Lua script run by its SHA (EVALSHA), each call sent once.
type Script struct {
	src, sha string
}

// NewScript returns src as a Script; its SHA is computed once, here.
func NewScript(src string) *Script {
	return &Script{src: src, sha: redis.NewScript(src).Hash()}
}

// Source is the script's text, what SCRIPT LOAD sends.
func (s *Script) Source() string { return s.src }

// SHA is the script's SHA1, what EVALSHA names.
func (s *Script) SHA() string { return s.sha }

// Cmd builds EVALSHA of the script over keys, to be sent wrapped in
// SendOnce (alone, or in a pipeline). A Cluster client routes it by its
// first key.
func (s *Script) Cmd(ctx context.Context, keys []string, args ...any) *redis.Cmd {
	a := make([]any, 0, 3+len(keys)+len(args))
	a = append(a, "evalsha", s.sha, len(keys))
	for _, k := range keys {
		a = append(a, k)
	}
	a = append(a, args...)
	cmd := redis.NewCmd(ctx, a...)
	if len(keys) > 0 {
		cmd.SetFirstKeyPos(3)
	}
	return cmd
}

// Run sends EVALSHA once (SendOnce) and returns the command; its Err is
// the call's error. A Redis that lost the script (restarted, flushed, a
// new Cluster master) answers NOSCRIPT without running it: the script is
// loaded and sent again, NoScriptRounds at most. A failed load is the
// returned command's error.
func (s *Script) Run(ctx context.Context, client Scripter, keys []string, args ...any) *redis.Cmd {
	cmd := s.Cmd(ctx, keys, args...)
	_ = client.Process(ctx, SendOnce{cmd})
	for round := 0; round < NoScriptRounds && IsNoScript(cmd.Err()); round++ {
		if err := client.ScriptLoad(ctx, s.src).Err(); err != nil {
			cmd.SetErr(fmt.Errorf("loading the script after NOSCRIPT: %w", err))
			return cmd
		}
		cmd = s.Cmd(ctx, keys, args...)
		_ = client.Process(ctx, SendOnce{cmd})
	}
	return cmd
}
