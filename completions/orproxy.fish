# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_orproxy_global_optspecs
    string join \n store= redis-prefix= h/help V/version
end

function __fish_orproxy_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_orproxy_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_orproxy_using_subcommand
    set -l cmd (__fish_orproxy_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c orproxy -n "__fish_orproxy_needs_command" -l store -d 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]' -r
complete -c orproxy -n "__fish_orproxy_needs_command" -l redis-prefix -d 'The prefix of orproxy\'s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]' -r
complete -c orproxy -n "__fish_orproxy_needs_command" -s h -l help -d 'Print help'
complete -c orproxy -n "__fish_orproxy_needs_command" -s V -l version -d 'Print version'
complete -c orproxy -n "__fish_orproxy_needs_command" -f -a "serve" -d 'Run the OpenAI-compatible proxy (http://127.0.0.1:3000/v1 by default)'
complete -c orproxy -n "__fish_orproxy_needs_command" -f -a "keys" -d 'Add, list, reactivate and remove OpenRouter API keys'
complete -c orproxy -n "__fish_orproxy_needs_command" -f -a "usage" -d 'Show the requests, errors, tokens and cost of each day, from the store'
complete -c orproxy -n "__fish_orproxy_needs_command" -f -a "generate" -d 'Write shell completions and man pages'
complete -c orproxy -n "__fish_orproxy_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c orproxy -n "__fish_orproxy_using_subcommand serve" -l host -d 'Address to listen on' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand serve" -l port -d 'Port to listen on (also from PORT, as the original Node server read it) [default: 3000]' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand serve" -l upstream -d 'OpenRouter API base that requests are forwarded to' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand serve" -l max-attempts -d 'Upstream attempts per request, each on the best available key' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand serve" -l max-failures -d 'Consecutive failures after which a key is disabled' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand serve" -l max-wait -d 'Seconds a request may wait for a cooling key (or a model\'s back-off) before orproxy answers 429' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand serve" -l workers -d 'Worker threads [default: the number of CPU cores]' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand serve" -l max-body -d 'Largest request body accepted (B, KiB, MiB, GiB, KB, MB, GB)' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand serve" -l connect-timeout -d 'Seconds to establish a connection (and TLS) to the upstream' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand serve" -l headers-timeout -d 'Seconds to wait for the upstream\'s response headers (LLMs can take minutes)' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand serve" -l idle-timeout -d 'Seconds of silence allowed between two chunks of an upstream body; a healthy stream has no total limit' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand serve" -l keep-alive -d 'Seconds an idle client connection is kept open between two requests' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand serve" -l sse-keepalive -d 'Seconds a stream may be held before its first content event (while orproxy can still retry it on another key) before SSE comments keep the client\'s connection alive, and between two of them; 0: never send them' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand serve" -l body-timeout -d 'Seconds a client has to send a whole request body, however steadily it sends (besides 30 s of silence at most)' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand serve" -l shutdown-grace -d 'Seconds in-flight requests get to finish after SIGINT/SIGTERM' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand serve" -l reprobe-interval -d 'Seconds between background GET /key re-checks of a key disabled by failures (0: never)' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand serve" -l referer -d 'HTTP-Referer sent to OpenRouter for app attribution, unless the client sent its own' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand serve" -l title -d 'X-Title sent to OpenRouter for app attribution, unless the client sent its own' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand serve" -l admin-token -d 'Token that turns the admin API (/admin/keys) on; send it as `Authorization: Bearer TOKEN`. Prefer the environment variable: command lines are visible to other local users' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand serve" -l client-token -d 'Only clients sending this bearer token may use /v1 and /metrics (repeatable; the environment variable is comma-separated). Without any, every token is accepted' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand serve" -l log-dir -d 'Directory of the daily log files requests-, errors- and keys-YYYY-MM-DD.log [default: $XDG_STATE_HOME/orproxy/logs, i.e. ~/.local/state/orproxy/logs]' -r -F
complete -c orproxy -n "__fish_orproxy_using_subcommand serve" -l log-retention-days -d 'Days the log files are kept; 0 keeps them forever (also from LOG_RETENTION_DAYS, as the original Node server read it) [default: 14]' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand serve" -l store -d 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand serve" -l redis-prefix -d 'The prefix of orproxy\'s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand serve" -l allow-open -d 'Listen on a non-loopback address without client tokens: an open proxy that anyone who reaches it can use to spend your keys\' quota'
complete -c orproxy -n "__fish_orproxy_using_subcommand serve" -l log-bodies -d 'Also write message contents (request bodies, non-streamed response bodies, streamed text) to the request log. Off by default: they are your users\' private data'
complete -c orproxy -n "__fish_orproxy_using_subcommand serve" -s h -l help -d 'Print help'
complete -c orproxy -n "__fish_orproxy_using_subcommand serve" -s V -l version -d 'Print version'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and not __fish_seen_subcommand_from add list reactivate remove check migrate help" -l store -d 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and not __fish_seen_subcommand_from add list reactivate remove check migrate help" -l redis-prefix -d 'The prefix of orproxy\'s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and not __fish_seen_subcommand_from add list reactivate remove check migrate help" -s h -l help -d 'Print help'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and not __fish_seen_subcommand_from add list reactivate remove check migrate help" -s V -l version -d 'Print version'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and not __fish_seen_subcommand_from add list reactivate remove check migrate help" -f -a "add" -d 'Add keys: from --key, a hidden prompt on a terminal, or one per line on stdin'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and not __fish_seen_subcommand_from add list reactivate remove check migrate help" -f -a "list" -d 'Show every key with its status, cooldown and failures'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and not __fish_seen_subcommand_from add list reactivate remove check migrate help" -f -a "reactivate" -d 'Put disabled or cooling keys back into rotation'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and not __fish_seen_subcommand_from add list reactivate remove check migrate help" -f -a "remove" -d 'Delete keys from the store'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and not __fish_seen_subcommand_from add list reactivate remove check migrate help" -f -a "check" -d 'Ask OpenRouter about keys (GET /key, which costs no quota) and record what it says'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and not __fish_seen_subcommand_from add list reactivate remove check migrate help" -f -a "migrate" -d 'Copy every key, with its state and the accounts\' counts, from one store to another'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and not __fish_seen_subcommand_from add list reactivate remove check migrate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from add" -l key -d 'A key to add (repeatable). Without it, keys are read from a hidden prompt or stdin' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from add" -l label -d 'A label for the added keys' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from add" -l upstream -d 'OpenRouter API base used to verify keys' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from add" -l store -d 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from add" -l redis-prefix -d 'The prefix of orproxy\'s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from add" -l no-verify -d 'Do not check the keys with OpenRouter before adding them'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from add" -s V -l version -d 'Print version'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from list" -l store -d 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from list" -l redis-prefix -d 'The prefix of orproxy\'s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from list" -l json -d 'Print a JSON array instead of a table'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from list" -s w -l watch -d 'Redraw the table every second (like `watch`) with cooldown countdowns; Ctrl-C quits'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from reactivate" -l store -d 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from reactivate" -l redis-prefix -d 'The prefix of orproxy\'s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from reactivate" -l all -d 'Reactivate every key'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from reactivate" -l forget-quota -d 'Also forget orproxy\'s count of today\'s :free requests of these keys\' accounts (when you know better, e.g. after buying credits)'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from reactivate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from reactivate" -s V -l version -d 'Print version'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from remove" -l store -d 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from remove" -l redis-prefix -d 'The prefix of orproxy\'s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from remove" -s V -l version -d 'Print version'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from check" -l upstream -d 'OpenRouter API base' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from check" -l store -d 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from check" -l redis-prefix -d 'The prefix of orproxy\'s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from check" -l json -d 'Print a JSON array instead of a table'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from check" -s h -l help -d 'Print help'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from check" -s V -l version -d 'Print version'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from migrate" -l from -d 'The store to copy from: a JSON file or a redis:// URL' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from migrate" -l to -d 'The store to copy to: a JSON file or a redis:// URL' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from migrate" -l store -d 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from migrate" -l redis-prefix -d 'The prefix of orproxy\'s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from migrate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from migrate" -s V -l version -d 'Print version'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "add" -d 'Add keys: from --key, a hidden prompt on a terminal, or one per line on stdin'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "list" -d 'Show every key with its status, cooldown and failures'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "reactivate" -d 'Put disabled or cooling keys back into rotation'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Delete keys from the store'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "check" -d 'Ask OpenRouter about keys (GET /key, which costs no quota) and record what it says'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "migrate" -d 'Copy every key, with its state and the accounts\' counts, from one store to another'
complete -c orproxy -n "__fish_orproxy_using_subcommand keys; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c orproxy -n "__fish_orproxy_using_subcommand usage" -l by -d 'One row per day and key, account or model' -r -f -a "key\t'Each key, by its ID'
account\t'Each OpenRouter account (key:ID for a key whose account is unknown)'
model\t'Each model, as the requests named it'"
complete -c orproxy -n "__fish_orproxy_using_subcommand usage" -l since -d 'The first day shown: a UTC date (YYYY-MM-DD), or the last N days, today included (7d) [default: every day kept]' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand usage" -l store -d 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand usage" -l redis-prefix -d 'The prefix of orproxy\'s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand usage" -l json -d 'Print a JSON array of rows instead of a table'
complete -c orproxy -n "__fish_orproxy_using_subcommand usage" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c orproxy -n "__fish_orproxy_using_subcommand usage" -s V -l version -d 'Print version'
complete -c orproxy -n "__fish_orproxy_using_subcommand generate" -l out-dir -d 'Directory that receives completions/ and man/' -r -F
complete -c orproxy -n "__fish_orproxy_using_subcommand generate" -l store -d 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand generate" -l redis-prefix -d 'The prefix of orproxy\'s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]' -r
complete -c orproxy -n "__fish_orproxy_using_subcommand generate" -s h -l help -d 'Print help'
complete -c orproxy -n "__fish_orproxy_using_subcommand generate" -s V -l version -d 'Print version'
complete -c orproxy -n "__fish_orproxy_using_subcommand help; and not __fish_seen_subcommand_from serve keys usage generate help" -f -a "serve" -d 'Run the OpenAI-compatible proxy (http://127.0.0.1:3000/v1 by default)'
complete -c orproxy -n "__fish_orproxy_using_subcommand help; and not __fish_seen_subcommand_from serve keys usage generate help" -f -a "keys" -d 'Add, list, reactivate and remove OpenRouter API keys'
complete -c orproxy -n "__fish_orproxy_using_subcommand help; and not __fish_seen_subcommand_from serve keys usage generate help" -f -a "usage" -d 'Show the requests, errors, tokens and cost of each day, from the store'
complete -c orproxy -n "__fish_orproxy_using_subcommand help; and not __fish_seen_subcommand_from serve keys usage generate help" -f -a "generate" -d 'Write shell completions and man pages'
complete -c orproxy -n "__fish_orproxy_using_subcommand help; and not __fish_seen_subcommand_from serve keys usage generate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c orproxy -n "__fish_orproxy_using_subcommand help; and __fish_seen_subcommand_from keys" -f -a "add" -d 'Add keys: from --key, a hidden prompt on a terminal, or one per line on stdin'
complete -c orproxy -n "__fish_orproxy_using_subcommand help; and __fish_seen_subcommand_from keys" -f -a "list" -d 'Show every key with its status, cooldown and failures'
complete -c orproxy -n "__fish_orproxy_using_subcommand help; and __fish_seen_subcommand_from keys" -f -a "reactivate" -d 'Put disabled or cooling keys back into rotation'
complete -c orproxy -n "__fish_orproxy_using_subcommand help; and __fish_seen_subcommand_from keys" -f -a "remove" -d 'Delete keys from the store'
complete -c orproxy -n "__fish_orproxy_using_subcommand help; and __fish_seen_subcommand_from keys" -f -a "check" -d 'Ask OpenRouter about keys (GET /key, which costs no quota) and record what it says'
complete -c orproxy -n "__fish_orproxy_using_subcommand help; and __fish_seen_subcommand_from keys" -f -a "migrate" -d 'Copy every key, with its state and the accounts\' counts, from one store to another'
