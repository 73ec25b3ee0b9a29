'use strict'
// The Animal Exchange suite again, unchanged, against a 3-member cluster: every client of
// the app talks to a *follower* (writes are forwarded to the leader, reads are local), as a
// user who points the official driver at any member would.

const helpers = require('./helpers/server')
const { TallyCluster } = require('./helpers/cluster')

helpers.startServer = async () => {
  const cluster = await new TallyCluster({ replicas: 3 }).start()
  const member = (await cluster.followers())[0]
  if (process.env.TALLY_TEST_VERBOSE) console.error(`Animal Exchange via member ${member.id} of ${cluster.members.length} (port ${member.port})`)
  const clients = []
  const client = secret => {
    const c = new helpers.faunadb.Client({
      secret, domain: helpers.HOST, port: member.port, scheme: 'http', timeout: 60, checkNewVersion: false,
    })
    clients.push(c)
    return c
  }
  return {
    cluster,
    member,
    client,
    adminClient: () => client(cluster.rootKey),
    async stop() {
      await Promise.all(clients.map(c => Promise.resolve(c.close({ force: true })).catch(() => {})))
      await cluster.stop()
    },
  }
}

require('./animal_exchange.test.js')
