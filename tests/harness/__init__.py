"""What the tests are made of, apart from the tests themselves: stand-ins as strict as the real
services (the Slack Web API stub, the containers' stand-in, a fake agent CLI), the real local
services they start (moto's UAT account, a docker engine and a registry, git repositories), signed
requests, and a running bot. Test modules import from here, never from each other."""
