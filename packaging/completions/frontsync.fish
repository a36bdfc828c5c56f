# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_frontsync_global_optspecs
    string join \n config= log-format= log-level= h/help V/version
end

function __fish_frontsync_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_frontsync_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_frontsync_using_subcommand
    set -l cmd (__fish_frontsync_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c frontsync -n "__fish_frontsync_needs_command" -l config -d 'Configuration file' -r -F
complete -c frontsync -n "__fish_frontsync_needs_command" -l log-format -d 'Log format on stderr' -r -f -a "human\t'One readable line per event'
json\t'One JSON object per event'"
complete -c frontsync -n "__fish_frontsync_needs_command" -l log-level -d 'Log filter, `RUST_LOG` syntax (`info`, `debug`, `frontsync=debug,hyper=warn`)' -r
complete -c frontsync -n "__fish_frontsync_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c frontsync -n "__fish_frontsync_needs_command" -s V -l version -d 'Print version'
complete -c frontsync -n "__fish_frontsync_needs_command" -f -a "run" -d 'Run the daemon in the foreground until SIGTERM or SIGINT'
complete -c frontsync -n "__fish_frontsync_needs_command" -f -a "check" -d 'Validate the configuration; print one line per subscription'
complete -c frontsync -n "__fish_frontsync_needs_command" -f -a "status" -d 'Ask the running daemon for cursors, lag, outbox depth and errors'
complete -c frontsync -n "__fish_frontsync_needs_command" -f -a "inboxes" -d 'List the inboxes a connection\'s token can see (id, name, private?)'
complete -c frontsync -n "__fish_frontsync_needs_command" -f -a "outbox" -d 'Show each sink\'s outbox depth and dead letters; retry or drop dead letters'
complete -c frontsync -n "__fish_frontsync_needs_command" -f -a "preview" -d 'Print the Highlight the daemon would emit for a conversation; writes nothing'
complete -c frontsync -n "__fish_frontsync_needs_command" -f -a "auth" -d 'Authorize frontsync for an OAuth connection and store the grant in the state database'
complete -c frontsync -n "__fish_frontsync_needs_command" -f -a "completions" -d 'Print a shell completion script on stdout (bash, zsh, fish, elvish, powershell)'
complete -c frontsync -n "__fish_frontsync_needs_command" -f -a "man" -d 'Print the man page frontsync(1) on stdout, or write every page into a folder'
complete -c frontsync -n "__fish_frontsync_using_subcommand run" -l config -d 'Configuration file' -r -F
complete -c frontsync -n "__fish_frontsync_using_subcommand run" -l log-format -d 'Log format on stderr' -r -f -a "human\t'One readable line per event'
json\t'One JSON object per event'"
complete -c frontsync -n "__fish_frontsync_using_subcommand run" -l log-level -d 'Log filter, `RUST_LOG` syntax (`info`, `debug`, `frontsync=debug,hyper=warn`)' -r
complete -c frontsync -n "__fish_frontsync_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c frontsync -n "__fish_frontsync_using_subcommand run" -s V -l version -d 'Print version'
complete -c frontsync -n "__fish_frontsync_using_subcommand check" -l config -d 'Configuration file' -r -F
complete -c frontsync -n "__fish_frontsync_using_subcommand check" -l log-format -d 'Log format on stderr' -r -f -a "human\t'One readable line per event'
json\t'One JSON object per event'"
complete -c frontsync -n "__fish_frontsync_using_subcommand check" -l log-level -d 'Log filter, `RUST_LOG` syntax (`info`, `debug`, `frontsync=debug,hyper=warn`)' -r
complete -c frontsync -n "__fish_frontsync_using_subcommand check" -l online -d 'Also call Front (/me, /inboxes) and each sink\'s health check'
complete -c frontsync -n "__fish_frontsync_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c frontsync -n "__fish_frontsync_using_subcommand check" -s V -l version -d 'Print version'
complete -c frontsync -n "__fish_frontsync_using_subcommand status" -l config -d 'Configuration file' -r -F
complete -c frontsync -n "__fish_frontsync_using_subcommand status" -l log-format -d 'Log format on stderr' -r -f -a "human\t'One readable line per event'
json\t'One JSON object per event'"
complete -c frontsync -n "__fish_frontsync_using_subcommand status" -l log-level -d 'Log filter, `RUST_LOG` syntax (`info`, `debug`, `frontsync=debug,hyper=warn`)' -r
complete -c frontsync -n "__fish_frontsync_using_subcommand status" -l json -d 'Print the raw JSON document'
complete -c frontsync -n "__fish_frontsync_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c frontsync -n "__fish_frontsync_using_subcommand status" -s V -l version -d 'Print version'
complete -c frontsync -n "__fish_frontsync_using_subcommand inboxes" -l front -d 'The connection: the NAME of a [front.NAME] table' -r
complete -c frontsync -n "__fish_frontsync_using_subcommand inboxes" -l config -d 'Configuration file' -r -F
complete -c frontsync -n "__fish_frontsync_using_subcommand inboxes" -l log-format -d 'Log format on stderr' -r -f -a "human\t'One readable line per event'
json\t'One JSON object per event'"
complete -c frontsync -n "__fish_frontsync_using_subcommand inboxes" -l log-level -d 'Log filter, `RUST_LOG` syntax (`info`, `debug`, `frontsync=debug,hyper=warn`)' -r
complete -c frontsync -n "__fish_frontsync_using_subcommand inboxes" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c frontsync -n "__fish_frontsync_using_subcommand inboxes" -s V -l version -d 'Print version'
complete -c frontsync -n "__fish_frontsync_using_subcommand outbox; and not __fish_seen_subcommand_from retry drop" -l limit -d 'Dead letters listed per sink' -r
complete -c frontsync -n "__fish_frontsync_using_subcommand outbox; and not __fish_seen_subcommand_from retry drop" -l config -d 'Configuration file' -r -F
complete -c frontsync -n "__fish_frontsync_using_subcommand outbox; and not __fish_seen_subcommand_from retry drop" -l log-format -d 'Log format on stderr' -r -f -a "human\t'One readable line per event'
json\t'One JSON object per event'"
complete -c frontsync -n "__fish_frontsync_using_subcommand outbox; and not __fish_seen_subcommand_from retry drop" -l log-level -d 'Log filter, `RUST_LOG` syntax (`info`, `debug`, `frontsync=debug,hyper=warn`)' -r
complete -c frontsync -n "__fish_frontsync_using_subcommand outbox; and not __fish_seen_subcommand_from retry drop" -l json -d 'Print JSON'
complete -c frontsync -n "__fish_frontsync_using_subcommand outbox; and not __fish_seen_subcommand_from retry drop" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c frontsync -n "__fish_frontsync_using_subcommand outbox; and not __fish_seen_subcommand_from retry drop" -s V -l version -d 'Print version'
complete -c frontsync -n "__fish_frontsync_using_subcommand outbox; and not __fish_seen_subcommand_from retry drop" -f -a "retry" -d 'Requeue dead letters: each goes to the END of the sink\'s outbox with a new seq, so it is delivered after everything already queued (possibly after a later revision of the same Highlight)'
complete -c frontsync -n "__fish_frontsync_using_subcommand outbox; and not __fish_seen_subcommand_from retry drop" -f -a "drop" -d 'Delete dead letters for good'
complete -c frontsync -n "__fish_frontsync_using_subcommand outbox; and __fish_seen_subcommand_from retry" -l config -d 'Configuration file' -r -F
complete -c frontsync -n "__fish_frontsync_using_subcommand outbox; and __fish_seen_subcommand_from retry" -l log-format -d 'Log format on stderr' -r -f -a "human\t'One readable line per event'
json\t'One JSON object per event'"
complete -c frontsync -n "__fish_frontsync_using_subcommand outbox; and __fish_seen_subcommand_from retry" -l log-level -d 'Log filter, `RUST_LOG` syntax (`info`, `debug`, `frontsync=debug,hyper=warn`)' -r
complete -c frontsync -n "__fish_frontsync_using_subcommand outbox; and __fish_seen_subcommand_from retry" -l all -d 'Every dead letter of the sink'
complete -c frontsync -n "__fish_frontsync_using_subcommand outbox; and __fish_seen_subcommand_from retry" -l json -d 'Print JSON'
complete -c frontsync -n "__fish_frontsync_using_subcommand outbox; and __fish_seen_subcommand_from retry" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c frontsync -n "__fish_frontsync_using_subcommand outbox; and __fish_seen_subcommand_from retry" -s V -l version -d 'Print version'
complete -c frontsync -n "__fish_frontsync_using_subcommand outbox; and __fish_seen_subcommand_from drop" -l config -d 'Configuration file' -r -F
complete -c frontsync -n "__fish_frontsync_using_subcommand outbox; and __fish_seen_subcommand_from drop" -l log-format -d 'Log format on stderr' -r -f -a "human\t'One readable line per event'
json\t'One JSON object per event'"
complete -c frontsync -n "__fish_frontsync_using_subcommand outbox; and __fish_seen_subcommand_from drop" -l log-level -d 'Log filter, `RUST_LOG` syntax (`info`, `debug`, `frontsync=debug,hyper=warn`)' -r
complete -c frontsync -n "__fish_frontsync_using_subcommand outbox; and __fish_seen_subcommand_from drop" -l all -d 'Every dead letter of the sink'
complete -c frontsync -n "__fish_frontsync_using_subcommand outbox; and __fish_seen_subcommand_from drop" -l json -d 'Print JSON'
complete -c frontsync -n "__fish_frontsync_using_subcommand outbox; and __fish_seen_subcommand_from drop" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c frontsync -n "__fish_frontsync_using_subcommand outbox; and __fish_seen_subcommand_from drop" -s V -l version -d 'Print version'
complete -c frontsync -n "__fish_frontsync_using_subcommand preview" -l subscription -d 'The subscription whose rules (labels, id prefix) apply' -r
complete -c frontsync -n "__fish_frontsync_using_subcommand preview" -l config -d 'Configuration file' -r -F
complete -c frontsync -n "__fish_frontsync_using_subcommand preview" -l log-format -d 'Log format on stderr' -r -f -a "human\t'One readable line per event'
json\t'One JSON object per event'"
complete -c frontsync -n "__fish_frontsync_using_subcommand preview" -l log-level -d 'Log filter, `RUST_LOG` syntax (`info`, `debug`, `frontsync=debug,hyper=warn`)' -r
complete -c frontsync -n "__fish_frontsync_using_subcommand preview" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c frontsync -n "__fish_frontsync_using_subcommand preview" -s V -l version -d 'Print version'
complete -c frontsync -n "__fish_frontsync_using_subcommand auth; and not __fish_seen_subcommand_from front" -l config -d 'Configuration file' -r -F
complete -c frontsync -n "__fish_frontsync_using_subcommand auth; and not __fish_seen_subcommand_from front" -l log-format -d 'Log format on stderr' -r -f -a "human\t'One readable line per event'
json\t'One JSON object per event'"
complete -c frontsync -n "__fish_frontsync_using_subcommand auth; and not __fish_seen_subcommand_from front" -l log-level -d 'Log filter, `RUST_LOG` syntax (`info`, `debug`, `frontsync=debug,hyper=warn`)' -r
complete -c frontsync -n "__fish_frontsync_using_subcommand auth; and not __fish_seen_subcommand_from front" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c frontsync -n "__fish_frontsync_using_subcommand auth; and not __fish_seen_subcommand_from front" -s V -l version -d 'Print version'
complete -c frontsync -n "__fish_frontsync_using_subcommand auth; and not __fish_seen_subcommand_from front" -f -a "front" -d 'A Front connection with `auth = { oauth = ... }`'
complete -c frontsync -n "__fish_frontsync_using_subcommand auth; and __fish_seen_subcommand_from front" -l code -d 'The code from the address Front redirected to (or that whole address): for a headless server, where the browser runs elsewhere. No listener runs and the state parameter is not checked' -r
complete -c frontsync -n "__fish_frontsync_using_subcommand auth; and __fish_seen_subcommand_from front" -l timeout -d 'How long to wait for the redirect' -r
complete -c frontsync -n "__fish_frontsync_using_subcommand auth; and __fish_seen_subcommand_from front" -l config -d 'Configuration file' -r -F
complete -c frontsync -n "__fish_frontsync_using_subcommand auth; and __fish_seen_subcommand_from front" -l log-format -d 'Log format on stderr' -r -f -a "human\t'One readable line per event'
json\t'One JSON object per event'"
complete -c frontsync -n "__fish_frontsync_using_subcommand auth; and __fish_seen_subcommand_from front" -l log-level -d 'Log filter, `RUST_LOG` syntax (`info`, `debug`, `frontsync=debug,hyper=warn`)' -r
complete -c frontsync -n "__fish_frontsync_using_subcommand auth; and __fish_seen_subcommand_from front" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c frontsync -n "__fish_frontsync_using_subcommand auth; and __fish_seen_subcommand_from front" -s V -l version -d 'Print version'
complete -c frontsync -n "__fish_frontsync_using_subcommand completions" -l config -d 'Configuration file' -r -F
complete -c frontsync -n "__fish_frontsync_using_subcommand completions" -l log-format -d 'Log format on stderr' -r -f -a "human\t'One readable line per event'
json\t'One JSON object per event'"
complete -c frontsync -n "__fish_frontsync_using_subcommand completions" -l log-level -d 'Log filter, `RUST_LOG` syntax (`info`, `debug`, `frontsync=debug,hyper=warn`)' -r
complete -c frontsync -n "__fish_frontsync_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c frontsync -n "__fish_frontsync_using_subcommand completions" -s V -l version -d 'Print version'
complete -c frontsync -n "__fish_frontsync_using_subcommand man" -l out-dir -d 'Write frontsync.1 and one frontsync-COMMAND.1 per subcommand into this folder' -r -F
complete -c frontsync -n "__fish_frontsync_using_subcommand man" -l config -d 'Configuration file' -r -F
complete -c frontsync -n "__fish_frontsync_using_subcommand man" -l log-format -d 'Log format on stderr' -r -f -a "human\t'One readable line per event'
json\t'One JSON object per event'"
complete -c frontsync -n "__fish_frontsync_using_subcommand man" -l log-level -d 'Log filter, `RUST_LOG` syntax (`info`, `debug`, `frontsync=debug,hyper=warn`)' -r
complete -c frontsync -n "__fish_frontsync_using_subcommand man" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c frontsync -n "__fish_frontsync_using_subcommand man" -s V -l version -d 'Print version'
