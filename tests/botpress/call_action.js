// Calls actioncage's /v1/chat/actions with the official Botpress client.
// stdin: {apiUrl, token, botId, calls: [{type, input, headers?}]}; stdout: one result per call.
const botpress = require('@botpress/client')
const { runtime, isApiError } = botpress

// The exported error class the client raised (its own class names are minified).
const className = (err) =>
  (Object.entries(botpress).find(([name, cls]) => name.endsWith('Error') && err.constructor === cls) || ['?'])[0]

async function main() {
  const chunks = []
  for await (const chunk of process.stdin) chunks.push(chunk)
  const job = JSON.parse(Buffer.concat(chunks).toString())
  const results = []
  for (const call of job.calls) {
    const client = new runtime.Client({
      apiUrl: job.apiUrl,
      token: job.token,
      botId: call.botId === undefined ? job.botId : call.botId,
      headers: call.headers || {},
      retry: { retries: 0 },
    })
    try {
      results.push({ ok: await client.callAction({ type: call.type, input: call.input }) })
    } catch (err) {
      if (!isApiError(err)) throw err
      results.push({
        error: { class: className(err), code: err.code, type: err.type, message: err.message, id: err.id },
      })
    }
  }
  process.stdout.write(JSON.stringify(results))
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
