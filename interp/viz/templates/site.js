const INDEX=JSON.parse(document.getElementById('index-data').textContent);
const list=document.getElementById('list'),q=document.getElementById('q'),view=document.getElementById('view');
function row(r){const tr=document.createElement('tr');for(const v of [r[0],r[1].toPrecision(3),r[2].toPrecision(3),r[3]]){
const td=document.createElement('td');td.textContent=String(v);tr.appendChild(td);}
tr.className='feature-row';tr.dataset.feature=r[0];tr.onclick=function(){location.hash='f='+r[0];};return tr;}
function render(){const s=q.value.toLowerCase();const out=[];for(const r of INDEX.rows){if(s&&!r[3].toLowerCase().includes(s))continue;
out.push(row(r));if(out.length>=500)break;}list.replaceChildren(...out);
document.getElementById('count').textContent=out.length+' shown of '+INDEX.rows.length;}
window.interpFeature=function(d){view.innerHTML=d.html;const el=document.getElementById('hist-'+d.id);
if(el&&window.Plotly){Plotly.newPlot(el,[{type:'bar',x:d.hist[0],y:d.hist[1],marker:{color:'#69c'}}],
{height:260,margin:{l:40,r:10,t:10,b:40},xaxis:{title:{text:'activation'}},yaxis:{title:{text:'tokens'}},bargap:0.05},
{displayModeBar:false,responsive:true});}};
function load(){const m=location.hash.match(/f=(\d+)/);if(!m)return;const s=document.createElement('script');
s.src='data/f'+m[1]+'.js';s.onerror=function(){view.textContent='No page for feature '+m[1]+'.';};document.body.appendChild(s);}
window.addEventListener('hashchange',load);q.addEventListener('input',render);render();load();
