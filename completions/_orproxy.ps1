
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'orproxy' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'orproxy'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'orproxy' {
            [CompletionResult]::new('--store', '--store', [CompletionResultType]::ParameterName, 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]')
            [CompletionResult]::new('--redis-prefix', '--redis-prefix', [CompletionResultType]::ParameterName, 'The prefix of orproxy''s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run the OpenAI-compatible proxy (http://127.0.0.1:3000/v1 by default)')
            [CompletionResult]::new('keys', 'keys', [CompletionResultType]::ParameterValue, 'Add, list, reactivate and remove OpenRouter API keys')
            [CompletionResult]::new('usage', 'usage', [CompletionResultType]::ParameterValue, 'Show the requests, errors, tokens and cost of each day, from the store')
            [CompletionResult]::new('generate', 'generate', [CompletionResultType]::ParameterValue, 'Write shell completions and man pages')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'orproxy;serve' {
            [CompletionResult]::new('--host', '--host', [CompletionResultType]::ParameterName, 'Address to listen on')
            [CompletionResult]::new('--port', '--port', [CompletionResultType]::ParameterName, 'Port to listen on (also from PORT, as the original Node server read it) [default: 3000]')
            [CompletionResult]::new('--upstream', '--upstream', [CompletionResultType]::ParameterName, 'OpenRouter API base that requests are forwarded to')
            [CompletionResult]::new('--max-attempts', '--max-attempts', [CompletionResultType]::ParameterName, 'Upstream attempts per request, each on the best available key')
            [CompletionResult]::new('--max-failures', '--max-failures', [CompletionResultType]::ParameterName, 'Consecutive failures after which a key is disabled')
            [CompletionResult]::new('--max-wait', '--max-wait', [CompletionResultType]::ParameterName, 'Seconds a request may wait for a cooling key (or a model''s back-off) before orproxy answers 429')
            [CompletionResult]::new('--workers', '--workers', [CompletionResultType]::ParameterName, 'Worker threads [default: the number of CPU cores]')
            [CompletionResult]::new('--max-body', '--max-body', [CompletionResultType]::ParameterName, 'Largest request body accepted (B, KiB, MiB, GiB, KB, MB, GB)')
            [CompletionResult]::new('--connect-timeout', '--connect-timeout', [CompletionResultType]::ParameterName, 'Seconds to establish a connection (and TLS) to the upstream')
            [CompletionResult]::new('--headers-timeout', '--headers-timeout', [CompletionResultType]::ParameterName, 'Seconds to wait for the upstream''s response headers (LLMs can take minutes)')
            [CompletionResult]::new('--idle-timeout', '--idle-timeout', [CompletionResultType]::ParameterName, 'Seconds of silence allowed between two chunks of an upstream body; a healthy stream has no total limit')
            [CompletionResult]::new('--keep-alive', '--keep-alive', [CompletionResultType]::ParameterName, 'Seconds an idle client connection is kept open between two requests')
            [CompletionResult]::new('--sse-keepalive', '--sse-keepalive', [CompletionResultType]::ParameterName, 'Seconds a stream may be held before its first content event (while orproxy can still retry it on another key) before SSE comments keep the client''s connection alive, and between two of them; 0: never send them')
            [CompletionResult]::new('--body-timeout', '--body-timeout', [CompletionResultType]::ParameterName, 'Seconds a client has to send a whole request body, however steadily it sends (besides 30 s of silence at most)')
            [CompletionResult]::new('--shutdown-grace', '--shutdown-grace', [CompletionResultType]::ParameterName, 'Seconds in-flight requests get to finish after SIGINT/SIGTERM')
            [CompletionResult]::new('--reprobe-interval', '--reprobe-interval', [CompletionResultType]::ParameterName, 'Seconds between background GET /key re-checks of a key disabled by failures (0: never)')
            [CompletionResult]::new('--referer', '--referer', [CompletionResultType]::ParameterName, 'HTTP-Referer sent to OpenRouter for app attribution, unless the client sent its own')
            [CompletionResult]::new('--title', '--title', [CompletionResultType]::ParameterName, 'X-Title sent to OpenRouter for app attribution, unless the client sent its own')
            [CompletionResult]::new('--admin-token', '--admin-token', [CompletionResultType]::ParameterName, 'Token that turns the admin API (/admin/keys) on; send it as `Authorization: Bearer TOKEN`. Prefer the environment variable: command lines are visible to other local users')
            [CompletionResult]::new('--client-token', '--client-token', [CompletionResultType]::ParameterName, 'Only clients sending this bearer token may use /v1 and /metrics (repeatable; the environment variable is comma-separated). Without any, every token is accepted')
            [CompletionResult]::new('--log-dir', '--log-dir', [CompletionResultType]::ParameterName, 'Directory of the daily log files requests-, errors- and keys-YYYY-MM-DD.log [default: $XDG_STATE_HOME/orproxy/logs, i.e. ~/.local/state/orproxy/logs]')
            [CompletionResult]::new('--log-retention-days', '--log-retention-days', [CompletionResultType]::ParameterName, 'Days the log files are kept; 0 keeps them forever (also from LOG_RETENTION_DAYS, as the original Node server read it) [default: 14]')
            [CompletionResult]::new('--store', '--store', [CompletionResultType]::ParameterName, 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]')
            [CompletionResult]::new('--redis-prefix', '--redis-prefix', [CompletionResultType]::ParameterName, 'The prefix of orproxy''s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]')
            [CompletionResult]::new('--allow-open', '--allow-open', [CompletionResultType]::ParameterName, 'Listen on a non-loopback address without client tokens: an open proxy that anyone who reaches it can use to spend your keys'' quota')
            [CompletionResult]::new('--log-bodies', '--log-bodies', [CompletionResultType]::ParameterName, 'Also write message contents (request bodies, non-streamed response bodies, streamed text) to the request log. Off by default: they are your users'' private data')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'orproxy;keys' {
            [CompletionResult]::new('--store', '--store', [CompletionResultType]::ParameterName, 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]')
            [CompletionResult]::new('--redis-prefix', '--redis-prefix', [CompletionResultType]::ParameterName, 'The prefix of orproxy''s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Add keys: from --key, a hidden prompt on a terminal, or one per line on stdin')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'Show every key with its status, cooldown and failures')
            [CompletionResult]::new('reactivate', 'reactivate', [CompletionResultType]::ParameterValue, 'Put disabled or cooling keys back into rotation')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Delete keys from the store')
            [CompletionResult]::new('check', 'check', [CompletionResultType]::ParameterValue, 'Ask OpenRouter about keys (GET /key, which costs no quota) and record what it says')
            [CompletionResult]::new('migrate', 'migrate', [CompletionResultType]::ParameterValue, 'Copy every key, with its state and the accounts'' counts, from one store to another')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'orproxy;keys;add' {
            [CompletionResult]::new('--key', '--key', [CompletionResultType]::ParameterName, 'A key to add (repeatable). Without it, keys are read from a hidden prompt or stdin')
            [CompletionResult]::new('--label', '--label', [CompletionResultType]::ParameterName, 'A label for the added keys')
            [CompletionResult]::new('--upstream', '--upstream', [CompletionResultType]::ParameterName, 'OpenRouter API base used to verify keys')
            [CompletionResult]::new('--store', '--store', [CompletionResultType]::ParameterName, 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]')
            [CompletionResult]::new('--redis-prefix', '--redis-prefix', [CompletionResultType]::ParameterName, 'The prefix of orproxy''s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]')
            [CompletionResult]::new('--no-verify', '--no-verify', [CompletionResultType]::ParameterName, 'Do not check the keys with OpenRouter before adding them')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'orproxy;keys;list' {
            [CompletionResult]::new('--store', '--store', [CompletionResultType]::ParameterName, 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]')
            [CompletionResult]::new('--redis-prefix', '--redis-prefix', [CompletionResultType]::ParameterName, 'The prefix of orproxy''s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print a JSON array instead of a table')
            [CompletionResult]::new('-w', '-w', [CompletionResultType]::ParameterName, 'Redraw the table every second (like `watch`) with cooldown countdowns; Ctrl-C quits')
            [CompletionResult]::new('--watch', '--watch', [CompletionResultType]::ParameterName, 'Redraw the table every second (like `watch`) with cooldown countdowns; Ctrl-C quits')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'orproxy;keys;reactivate' {
            [CompletionResult]::new('--store', '--store', [CompletionResultType]::ParameterName, 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]')
            [CompletionResult]::new('--redis-prefix', '--redis-prefix', [CompletionResultType]::ParameterName, 'The prefix of orproxy''s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]')
            [CompletionResult]::new('--all', '--all', [CompletionResultType]::ParameterName, 'Reactivate every key')
            [CompletionResult]::new('--forget-quota', '--forget-quota', [CompletionResultType]::ParameterName, 'Also forget orproxy''s count of today''s :free requests of these keys'' accounts (when you know better, e.g. after buying credits)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'orproxy;keys;remove' {
            [CompletionResult]::new('--store', '--store', [CompletionResultType]::ParameterName, 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]')
            [CompletionResult]::new('--redis-prefix', '--redis-prefix', [CompletionResultType]::ParameterName, 'The prefix of orproxy''s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'orproxy;keys;check' {
            [CompletionResult]::new('--upstream', '--upstream', [CompletionResultType]::ParameterName, 'OpenRouter API base')
            [CompletionResult]::new('--store', '--store', [CompletionResultType]::ParameterName, 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]')
            [CompletionResult]::new('--redis-prefix', '--redis-prefix', [CompletionResultType]::ParameterName, 'The prefix of orproxy''s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print a JSON array instead of a table')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'orproxy;keys;migrate' {
            [CompletionResult]::new('--from', '--from', [CompletionResultType]::ParameterName, 'The store to copy from: a JSON file or a redis:// URL')
            [CompletionResult]::new('--to', '--to', [CompletionResultType]::ParameterName, 'The store to copy to: a JSON file or a redis:// URL')
            [CompletionResult]::new('--store', '--store', [CompletionResultType]::ParameterName, 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]')
            [CompletionResult]::new('--redis-prefix', '--redis-prefix', [CompletionResultType]::ParameterName, 'The prefix of orproxy''s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'orproxy;keys;help' {
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Add keys: from --key, a hidden prompt on a terminal, or one per line on stdin')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'Show every key with its status, cooldown and failures')
            [CompletionResult]::new('reactivate', 'reactivate', [CompletionResultType]::ParameterValue, 'Put disabled or cooling keys back into rotation')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Delete keys from the store')
            [CompletionResult]::new('check', 'check', [CompletionResultType]::ParameterValue, 'Ask OpenRouter about keys (GET /key, which costs no quota) and record what it says')
            [CompletionResult]::new('migrate', 'migrate', [CompletionResultType]::ParameterValue, 'Copy every key, with its state and the accounts'' counts, from one store to another')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'orproxy;keys;help;add' {
            break
        }
        'orproxy;keys;help;list' {
            break
        }
        'orproxy;keys;help;reactivate' {
            break
        }
        'orproxy;keys;help;remove' {
            break
        }
        'orproxy;keys;help;check' {
            break
        }
        'orproxy;keys;help;migrate' {
            break
        }
        'orproxy;keys;help;help' {
            break
        }
        'orproxy;usage' {
            [CompletionResult]::new('--by', '--by', [CompletionResultType]::ParameterName, 'One row per day and key, account or model')
            [CompletionResult]::new('--since', '--since', [CompletionResultType]::ParameterName, 'The first day shown: a UTC date (YYYY-MM-DD), or the last N days, today included (7d) [default: every day kept]')
            [CompletionResult]::new('--store', '--store', [CompletionResultType]::ParameterName, 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]')
            [CompletionResult]::new('--redis-prefix', '--redis-prefix', [CompletionResultType]::ParameterName, 'The prefix of orproxy''s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print a JSON array of rows instead of a table')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'orproxy;generate' {
            [CompletionResult]::new('--out-dir', '--out-dir', [CompletionResultType]::ParameterName, 'Directory that receives completions/ and man/')
            [CompletionResult]::new('--store', '--store', [CompletionResultType]::ParameterName, 'The key store shared by `serve` and the `keys` commands: a JSON file, or a redis:// or rediss:// URL (redis://[:PASSWORD@]HOST:PORT/DB) that several orproxy instances share [default: $XDG_DATA_HOME/orproxy/keys.json, i.e. ~/.local/share/orproxy/keys.json]')
            [CompletionResult]::new('--redis-prefix', '--redis-prefix', [CompletionResultType]::ParameterName, 'The prefix of orproxy''s Redis keys, so that several key pools can share one Redis database (only with a redis:// store) [default: orproxy]')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'orproxy;help' {
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Run the OpenAI-compatible proxy (http://127.0.0.1:3000/v1 by default)')
            [CompletionResult]::new('keys', 'keys', [CompletionResultType]::ParameterValue, 'Add, list, reactivate and remove OpenRouter API keys')
            [CompletionResult]::new('usage', 'usage', [CompletionResultType]::ParameterValue, 'Show the requests, errors, tokens and cost of each day, from the store')
            [CompletionResult]::new('generate', 'generate', [CompletionResultType]::ParameterValue, 'Write shell completions and man pages')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'orproxy;help;serve' {
            break
        }
        'orproxy;help;keys' {
            [CompletionResult]::new('add', 'add', [CompletionResultType]::ParameterValue, 'Add keys: from --key, a hidden prompt on a terminal, or one per line on stdin')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'Show every key with its status, cooldown and failures')
            [CompletionResult]::new('reactivate', 'reactivate', [CompletionResultType]::ParameterValue, 'Put disabled or cooling keys back into rotation')
            [CompletionResult]::new('remove', 'remove', [CompletionResultType]::ParameterValue, 'Delete keys from the store')
            [CompletionResult]::new('check', 'check', [CompletionResultType]::ParameterValue, 'Ask OpenRouter about keys (GET /key, which costs no quota) and record what it says')
            [CompletionResult]::new('migrate', 'migrate', [CompletionResultType]::ParameterValue, 'Copy every key, with its state and the accounts'' counts, from one store to another')
            break
        }
        'orproxy;help;keys;add' {
            break
        }
        'orproxy;help;keys;list' {
            break
        }
        'orproxy;help;keys;reactivate' {
            break
        }
        'orproxy;help;keys;remove' {
            break
        }
        'orproxy;help;keys;check' {
            break
        }
        'orproxy;help;keys;migrate' {
            break
        }
        'orproxy;help;usage' {
            break
        }
        'orproxy;help;generate' {
            break
        }
        'orproxy;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
